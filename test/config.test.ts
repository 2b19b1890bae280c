import t from 'tap'
import { loadEnv } from '../config.js'

t.test('defaults', async (t) => {
  t.match(loadEnv({}), {
    PORT: 8080, HOST: '0.0.0.0', LOG_LEVEL: 'info', STATS_TIMEZONE: 'UTC',
    JWT_CLAIM_NEGOCIO_ID: 'negocio_id', JWT_CLAIM_NEGOCIOS: 'negocios', JWT_CLAIM_ROLE: 'role', JWT_SERVICE_ROLE: 'service'
  })
  t.equal(loadEnv({}).DATABASE_URL, undefined)
  t.equal(loadEnv({}).JWT_ADMIN_ROLE, undefined)
  t.equal(loadEnv({ PORT: '', JWT_ADMIN_ROLE: '' }).PORT, 8080, 'empty counts as unset')
})

t.test('values are read and typed', async (t) => {
  const env = loadEnv({
    PORT: '9000', HOST: '127.0.0.1', DATABASE_URL: 'postgres://u:p@h/db', JWT_SECRET: 'x'.repeat(32),
    LOG_LEVEL: 'debug', STATS_TIMEZONE: 'Europe/Madrid', JWT_ADMIN_ROLE: 'admin', UNRELATED: 'ignored'
  })
  t.match(env, { PORT: 9000, HOST: '127.0.0.1', LOG_LEVEL: 'debug', STATS_TIMEZONE: 'Europe/Madrid', JWT_ADMIN_ROLE: 'admin' })
})

t.test('a bad variable is one line naming it', async (t) => {
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ PORT: 'abc' }, /^invalid PORT: .*\(got "abc"\)$/],
    [{ PORT: '70000' }, /^invalid PORT: /],
    [{ LOG_LEVEL: 'loud' }, /^invalid LOG_LEVEL: /],
    [{ DATABASE_URL: 'mysql://x' }, /^invalid DATABASE_URL: /],
    [{ JWT_SECRET: 'short' }, /^invalid JWT_SECRET: .*"<redacted>"/],
    [{ STATS_TIMEZONE: 'Mars/Olympus' }, /^invalid STATS_TIMEZONE: not an IANA time zone/],
    [{ JWT_CLAIM_ROLE: 'has space' }, /^invalid JWT_CLAIM_ROLE: /]
  ]
  for (const [env, message] of cases) {
    t.throws(() => loadEnv(env), { name: 'ConfigError', message }, JSON.stringify(env))
  }
  t.throws(() => loadEnv({ DATABASE_URL: 'mysql://user:pw@h/db' }), { message: /<redacted>@/ }, 'credentials in a bad URL are not echoed')
})
