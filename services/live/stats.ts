import { AppError } from '../http/errors.js'
import type { Stats } from '../../protocol.js'

/** The four figures of one business, exactly as sent on the wire (defined in ../protocol.ts). */
export type { Stats }

/** The subset of pg.Pool the service needs, so a host app can pass its own pool or a client. */
export interface Queryable {
  query: <R extends Record<string, unknown> = Record<string, unknown>>(text: string, values?: unknown[]) => Promise<{ rows: R[] }>
}

export interface StatsServiceOptions {
  /** IANA zone for "today" when the business has no zona_horaria of its own. */
  timezone?: string
  /** Clock, injectable for tests of the day boundary. */
  now?: () => Date
}

/**
 * One statement, one index-only scan of citas_stats_idx. "Today" is the half-open range
 * [local midnight, next local midnight) in the business's zone, computed by PostgreSQL so that
 * daylight-saving days of 23 or 25 hours are right.
 */
export const STATS_SQL = `
WITH dia AS (
  SELECT n.id,
         date_trunc('day', $3::timestamptz AT TIME ZONE coalesce(n.zona_horaria, $2)) AT TIME ZONE coalesce(n.zona_horaria, $2) AS desde,
         (date_trunc('day', $3::timestamptz AT TIME ZONE coalesce(n.zona_horaria, $2)) + interval '1 day') AT TIME ZONE coalesce(n.zona_horaria, $2) AS hasta
  FROM negocios n
  WHERE n.id = $1
)
SELECT max(dia.id) AS negocio_id,
       (count(c.negocio_id) FILTER (WHERE c.fecha_hora >= dia.desde AND c.fecha_hora < dia.hasta))::int AS citas_hoy,
       count(c.negocio_id)::int AS total_citas,
       (count(c.negocio_id) FILTER (WHERE c.estado = 'atendida'))::int AS citas_completadas,
       (count(c.negocio_id) FILTER (WHERE c.estado = 'cancelada'))::int AS citas_canceladas,
       max(dia.hasta) AS day_ends_at,
       (extract(epoch FROM statement_timestamp()) * 1000000)::bigint AS version
FROM dia
LEFT JOIN citas c ON c.negocio_id = $1`

interface StatsRow extends Record<string, unknown> {
  negocio_id: string | null
  citas_hoy: number
  total_citas: number
  citas_completadas: number
  citas_canceladas: number
  day_ends_at: Date | null
  version: string
}

/** Stats plus what the cache needs to know about them. */
export interface Snapshot {
  stats: Stats
  /** When "today" ends for this business (ms since epoch): citas_hoy must be recomputed then. */
  dayEndsAt: number
  /**
   * The database's statement_timestamp() in µs: one clock for every instance, so of two snapshots
   * the larger version saw at least every change the other saw.
   */
  version: number
}

export function createStatsService (db: Queryable, opts: StatsServiceOptions = {}) {
  const timezone = opts.timezone ?? 'UTC'
  const now = opts.now ?? (() => new Date())
  let queries = 0
  const queryListeners: Array<(seconds: number, outcome: 'ok' | 'error') => void> = []
  const unavailableListeners = new Set<(err: unknown) => void>()

  /**
   * Computes the stats of one business. Rejects with AppError('not_found') for an unknown
   * negocio and AppError('unavailable') when the database cannot answer.
   */
  async function computeSnapshot (negocioId: string): Promise<Snapshot> {
    const at = now()
    queries++
    let rows: StatsRow[]
    const started = process.hrtime.bigint()
    const observe = (outcome: 'ok' | 'error'): void => {
      if (queryListeners.length === 0) return
      const seconds = Number(process.hrtime.bigint() - started) / 1e9
      for (const listener of queryListeners) listener(seconds, outcome)
    }
    try {
      ({ rows } = await db.query<StatsRow>(STATS_SQL, [negocioId, timezone, at.toISOString()]))
    } catch (err) {
      observe('error')
      for (const fn of unavailableListeners) fn(err)
      throw new AppError('unavailable', 'statistics are unavailable right now', { cause: err })
    }
    observe('ok')
    const row = rows[0]
    if (row === undefined || row.negocio_id === null) {
      throw new AppError('not_found', `negocio ${negocioId} does not exist`)
    }
    return {
      stats: {
        negocio_id: row.negocio_id,
        citas_hoy: row.citas_hoy,
        total_citas: row.total_citas,
        citas_completadas: row.citas_completadas,
        citas_canceladas: row.citas_canceladas,
        timestamp: Math.floor(at.getTime() / 1000)
      },
      dayEndsAt: row.day_ends_at?.getTime() ?? Number.POSITIVE_INFINITY,
      version: Number(row.version)
    }
  }

  async function compute (negocioId: string): Promise<Stats> {
    return (await computeSnapshot(negocioId)).stats
  }

  return {
    compute,
    computeSnapshot,
    now,
    /** Calls `listener` with the duration of every query (for metrics). */
    onQuery: (listener: (seconds: number, outcome: 'ok' | 'error') => void) => { queryListeners.push(listener) },
    /** Calls `fn` whenever a stats query fails to reach the database (the outage monitor listens). */
    onUnavailable (fn: (err: unknown) => void): void { unavailableListeners.add(fn) },
    /** How many stats queries this service has sent (for tests, metrics and benchmarks). */
    get queryCount () { return queries },
    timezone
  }
}

export type StatsService = ReturnType<typeof createStatsService>

export function isValidTimeZone (zone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone }).format(0)
    return true
  } catch {
    return false
  }
}
