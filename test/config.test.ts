import t from 'tap'
import { commaList, loadEnv, optionsFromEnv, trustProxy } from '../config.js'

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
    [{ JWT_CLAIM_ROLE: 'has space' }, /^invalid JWT_CLAIM_ROLE: /],
    [{ STATS_COALESCE_MS: '-1' }, /^invalid STATS_COALESCE_MS: .*\(got "-1"\)$/],
    [{ WS_MAX_PAYLOAD: '100' }, /^invalid WS_MAX_PAYLOAD: Expected integer to be greater or equal to 256 \(got 100\)$/],
    [{ CHANGE_CAPTURE: 'yes' }, /^invalid CHANGE_CAPTURE: /],
    [{ NOTIFY_TRUSTED_NETWORKS: '10.0.0.0/8,intranet' }, /^invalid NOTIFY_TRUSTED_NETWORKS: "intranet" is not an IP address or a CIDR/],
    [{ TRUST_PROXY: 'true', NOTIFY_TRUSTED_NETWORKS: '10.0.0.0/8' }, /^invalid TRUST_PROXY: "true" believes any X-Forwarded-For, so a client could claim an address NOTIFY_TRUSTED_NETWORKS trusts .*: list your proxies instead/],
    [{ TRUST_PROXY: 'true', WS_MAX_CONNECTIONS_PER_IP: '5' }, /^invalid TRUST_PROXY: "true" .*WS_MAX_CONNECTIONS_PER_IP.*: list your proxies instead/],
    [{ TRUST_PROXY: '10.0.0.1,the-lb' }, /^invalid TRUST_PROXY: "the-lb" is not an IP address or a CIDR/],
    [{ CHANGE_CAPTURE_STALL_MS: '60000' }, /^invalid CHANGE_CAPTURE_STALL_MS: /]
  ]
  for (const [env, message] of cases) {
    t.throws(() => loadEnv(env), { name: 'ConfigError', message }, JSON.stringify(env))
  }
  t.throws(() => loadEnv({ DATABASE_URL: 'mysql://user:pw@h/db' }), { message: /<redacted>@/ }, 'credentials in a bad URL are not echoed')
})

t.test('hardening settings: defaults, parsing, and one line per bad value', async (t) => {
  t.match(loadEnv({}), {
    WS_MAX_PAYLOAD: 4096, WS_MAX_SUBSCRIPTIONS: 100, WS_MAX_CONNECTIONS_PER_USER: 20, WS_MAX_CONNECTIONS_PER_IP: 0,
    WS_MESSAGE_RATE: 10, WS_MESSAGE_BURST: 20, WS_MAX_BUFFERED_BYTES: 65536, WS_STALL_TIMEOUT_MS: 30000, WS_HEARTBEAT_MS: 30000,
    TOKEN_EXPIRY_WARNING_MS: 30000, NOTIFY_RATE_MAX: 1200, NOTIFY_RATE_WINDOW_MS: 60000,
    DB_STATEMENT_TIMEOUT_MS: 5000, DB_CONNECTION_TIMEOUT_MS: 5000, SHUTDOWN_GRACE_MS: 10000
  })
  t.equal(loadEnv({}).ALLOWED_ORIGINS, undefined)
  t.equal(loadEnv({ WS_MAX_CONNECTIONS_PER_IP: '5' }).WS_MAX_CONNECTIONS_PER_IP, 5)
  t.same(commaList(' https://a.example.com, ,http://localhost:3000 '), ['https://a.example.com', 'http://localhost:3000'])
  t.throws(() => loadEnv({ ALLOWED_ORIGINS: 'https://ok.example.com,app.example.com' }), { name: 'ConfigError', message: /^invalid ALLOWED_ORIGINS: "app.example.com" is not an http\(s\) origin/ })
  t.throws(() => loadEnv({ WS_MESSAGE_RATE: '0' }), { message: /^invalid WS_MESSAGE_RATE: / })
  t.throws(() => loadEnv({ WS_MAX_BUFFERED_BYTES: 'lots' }), { message: /^invalid WS_MAX_BUFFERED_BYTES: .*\(got "lots"\)$/ })
  t.equal(trustProxy(undefined), false)
  t.equal(trustProxy('true'), true)
  t.equal(trustProxy('10.0.0.0/8'), '10.0.0.0/8')
})

t.test('the environment becomes plugin options, checked by the plugins\' own schemas', async (t) => {
  const env = loadEnv({ STATS_COALESCE_MS: '250', CHANGE_CAPTURE: 'off', ALLOWED_ORIGINS: 'https://a.example.com', JWT_CLAIM_ROLE: 'rol', WS_MAX_PAYLOAD: '8192', NOTIFY_TRUSTED_NETWORKS: '10.0.0.0/8, 192.168.1.5' })
  const opts = optionsFromEnv(env)
  t.match(opts, {
    maxPayload: 8192,
    live: { coalesceMs: 250, changeCapture: false },
    limits: { allowedOrigins: ['https://a.example.com'], maxSubscriptions: 100 },
    auth: { claims: { role: 'rol', negocioId: 'negocio_id' }, serviceRole: 'service', notifyTrustedNetworks: ['10.0.0.0/8', '192.168.1.5'] },
    stats: { timezone: 'UTC' }
  })
  t.equal(loadEnv({}).STATS_COALESCE_MS, 100, 'the default is the live plugin\'s')
})

t.test('TRUST_PROXY: true alone is taken; a list goes to the limits as the proxies', async (t) => {
  t.equal(trustProxy(loadEnv({ TRUST_PROXY: 'true' }).TRUST_PROXY), true)
  t.equal(trustProxy(loadEnv({ TRUST_PROXY: '10.0.0.5, 10.0.1.0/24', NOTIFY_TRUSTED_NETWORKS: '10.0.0.0/8' }).TRUST_PROXY), '10.0.0.5, 10.0.1.0/24')
})
