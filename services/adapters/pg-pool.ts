// `pg-pool-settings`: a host Pool's settings for the dedicated session, from pg-pool's undocumented `options` (checked: a numeric
// `max`); boot only, nothing public tells. Public path: none, as a guess (pg's PG* defaults) could reach another database.
import type pg from 'pg'
import { guard, type AdapterLog } from './guard.js'

const settingsGuard = guard('pg-pool-settings', 'the dedicated session cannot copy the host pool\'s settings')

export const SESSION_SETTINGS_NEEDED = 'citas-live: cannot read the connection settings of the pool the host app passed (another pg version?): pass live.session (a postgres:// URL or pg client settings) for the dedicated database session'

export function poolSettings (pool: pg.Pool, log?: AdapterLog): pg.ClientConfig {
  const options = settingsGuard.public ? undefined : (pool as unknown as { options?: unknown }).options
  if (typeof options !== 'object' || options === null || typeof (options as { max?: unknown }).max !== 'number') {
    settingsGuard.fallback(settingsGuard.public ? 'forced' : 'no options object on the pool', log)
    throw new Error(SESSION_SETTINGS_NEEDED)
  }
  const settings = options as pg.ClientConfig
  // pg-pool hides the password from enumeration (to keep it out of logs): a spread would drop it.
  return settings.password === undefined ? { ...settings } : { ...settings, password: settings.password }
}
