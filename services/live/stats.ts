import { AppError } from '../http/errors.js'
import type { Stats } from '../../protocol.js'

export type { Stats }

/** The subset of pg.Pool the service needs, so a host app can pass its own pool or a client. */
export interface Queryable {
  query: <R extends Record<string, unknown> = Record<string, unknown>>(text: string, values?: unknown[]) => Promise<{ rows: R[] }>
}

export interface StatsServiceOptions {
  /** IANA zone for "today" when the business has no zona_horaria of its own. */
  timezone?: string
  now?: () => Date
}

/** One index-only scan of citas_stats_idx; PostgreSQL computes "today" in the business's zone, so 23/25-hour days are right. */
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

interface StatsRow extends Record<string, unknown>, Pick<Stats, 'citas_hoy' | 'total_citas' | 'citas_completadas' | 'citas_canceladas'> {
  negocio_id: string | null
  day_ends_at: Date | null
  version: string
}

export interface Snapshot {
  stats: Stats
  /** When "today" ends for this business (ms since epoch): citas_hoy must be recomputed then. */
  dayEndsAt: number
  /** statement_timestamp() in µs: one clock for all instances, so the larger version saw every change the other did. */
  version: number
}

export function createStatsService (db: Queryable, opts: StatsServiceOptions = {}) {
  const timezone = opts.timezone ?? 'UTC'
  const now = opts.now ?? (() => new Date())
  let queries = 0
  const queryListeners: Array<(seconds: number, outcome: 'ok' | 'error') => void> = []
  const unavailableListeners = new Set<(err: unknown) => void>()

  /** Rejects with AppError('not_found') for an unknown negocio, AppError('unavailable') when the database cannot answer. */
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
    compute, computeSnapshot, now,
    onQuery: (listener: (seconds: number, outcome: 'ok' | 'error') => void) => { queryListeners.push(listener) },
    onUnavailable (fn: (err: unknown) => void): void { unavailableListeners.add(fn) },
    get queryCount () { return queries }
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
