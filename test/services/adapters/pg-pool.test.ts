import t from 'tap'
import pg from 'pg'
import { poolSettings, SESSION_SETTINGS_NEEDED } from '../../../services/adapters/pg-pool.js'
import { forcePublic, resetGuards } from '../../../services/adapters/guard.js'

t.test('pg-pool-settings fast path: a host pool\'s connection settings, password included', async (t) => {
  resetGuards()
  const pool = new pg.Pool({ host: '10.0.0.9', port: 6543, user: 'app', password: 'pw-secret', database: 'citas', ssl: { rejectUnauthorized: false }, max: 3 })
  t.teardown(async () => await pool.end())
  const settings = poolSettings(pool)
  t.match(settings, { host: '10.0.0.9', port: 6543, user: 'app', database: 'citas', ssl: { rejectUnauthorized: false } })
  t.equal(settings.password, 'pw-secret', 'pg-pool hides it from enumeration; the copy carries it')
  t.equal({ ...settings }.password, 'pw-secret', 'and it survives a spread, as the session does')
  const byUrl = new pg.Pool({ connectionString: 'postgres://u:p@db.example:5432/x' })
  t.teardown(async () => await byUrl.end())
  t.match(poolSettings(byUrl), { connectionString: 'postgres://u:p@db.example:5432/x' })
})

t.test('pg-pool-settings fallback: a pool without pg-pool\'s options stops the boot, asking for live.session', async (t) => {
  resetGuards()
  t.teardown(resetGuards)
  const other = { query: async () => ({ rows: [] }) } as unknown as pg.Pool
  t.throws(() => poolSettings(other), { message: SESSION_SETTINGS_NEEDED })
  t.throws(() => poolSettings({ options: { host: 'x' } } as unknown as pg.Pool), { message: /live\.session/ }, 'an options object that is not pg-pool\'s')
})

t.test('pg-pool-settings forced onto its public path', async (t) => {
  resetGuards()
  t.teardown(resetGuards)
  forcePublic(['pg-pool-settings'])
  const pool = new pg.Pool({ host: 'x' })
  t.teardown(async () => await pool.end())
  t.throws(() => poolSettings(pool), { message: SESSION_SETTINGS_NEEDED })
})
