/**
 * The connection settings of a pg Pool a host app passes in (`pg-pool-settings`, at boot), for the
 * one dedicated session each instance opens (LISTEN, the change-capture lock) with the same
 * host, credentials and TLS. pg-pool keeps them in its `options` property, which @types/pg
 * declares but pg-pool does not document; pg is pinned exactly in package.json, but a host's pool
 * may come from its own copy of pg. A pool citas-live builds itself never gets here: plugins/db.ts
 * keeps the settings it built it from.
 *
 * Public path: none can read a pool's settings, so there is no guess (pg's PG* environment
 * defaults could point at another database): booting stops and asks for the live plugin's
 * `session` option.
 */
import type pg from 'pg'
import { guard, type AdapterLog } from './guard.js'

const settingsGuard = guard('pg-pool-settings', 'the dedicated session cannot copy the host pool\'s settings')

/** Thrown when a host pool's settings cannot be read. */
export const SESSION_SETTINGS_NEEDED = 'citas-live: cannot read the connection settings of the pool the host app passed (another pg version?): pass live.session (a postgres:// URL or pg client settings) for the dedicated database session'

export function poolSettings (pool: pg.Pool, log?: AdapterLog): pg.ClientConfig {
  const options = settingsGuard.public ? undefined : (pool as unknown as { options?: unknown }).options
  // pg-pool always sets max on its copy of the options.
  if (typeof options !== 'object' || options === null || typeof (options as { max?: unknown }).max !== 'number') {
    settingsGuard.fallback(settingsGuard.public ? 'forced' : 'no options object on the pool', log)
    throw new Error(SESSION_SETTINGS_NEEDED)
  }
  const settings = options as pg.ClientConfig
  // pg-pool hides the password from enumeration (so it stays out of logs): a copy must carry it over.
  return settings.password === undefined ? { ...settings } : { ...settings, password: settings.password }
}
