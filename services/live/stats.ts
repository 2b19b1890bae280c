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

/** Every negocio in $1 in one statement (index-only scans of citas_stats_idx); "today" in its zone, so 23- or 25-hour days are right. */
export const STATS_SQL = `
WITH dia AS (
  SELECT n.id,
         date_trunc('day', $3::timestamptz AT TIME ZONE coalesce(n.zona_horaria, $2)) AT TIME ZONE coalesce(n.zona_horaria, $2) AS desde,
         (date_trunc('day', $3::timestamptz AT TIME ZONE coalesce(n.zona_horaria, $2)) + interval '1 day') AT TIME ZONE coalesce(n.zona_horaria, $2) AS hasta
  FROM negocios n
  WHERE n.id = ANY ($1::text[])
)
SELECT dia.id AS negocio_id,
       (count(c.negocio_id) FILTER (WHERE c.fecha_hora >= dia.desde AND c.fecha_hora < dia.hasta))::int AS citas_hoy,
       count(c.negocio_id)::int AS total_citas,
       (count(c.negocio_id) FILTER (WHERE c.estado = 'atendida'))::int AS citas_completadas,
       (count(c.negocio_id) FILTER (WHERE c.estado = 'cancelada'))::int AS citas_canceladas,
       dia.hasta AS day_ends_at,
       (extract(epoch FROM statement_timestamp()) * 1000000)::bigint AS version
FROM dia
LEFT JOIN citas c ON c.negocio_id = dia.id
GROUP BY dia.id, dia.desde, dia.hasta`

interface StatsRow extends Record<string, unknown>, Pick<Stats, 'citas_hoy' | 'total_citas' | 'citas_completadas' | 'citas_canceladas'> {
  negocio_id: string
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

/** Negocios one statement computes at most. */
export const MAX_BATCH = 100
/** A negocio with this many citas is computed in a statement of its own, so it does not slow the others. */
export const SOLO_CITAS = 20_000

type Waiter = { resolve: (snapshot: Snapshot) => void, reject: (err: unknown) => void }

/** Negocios asked for in one turn of the event loop share a statement (a poll that drained 40 costs one query), big ones aside. */
export function createStatsService (db: Queryable, opts: StatsServiceOptions = {}) {
  const timezone = opts.timezone ?? 'UTC'
  const now = opts.now ?? (() => new Date())
  let queries = 0
  const queryListeners: Array<(seconds: number, outcome: 'ok' | 'error') => void> = []
  const unavailableListeners = new Set<(err: unknown) => void>()
  let asked = new Map<string, Waiter[]>()
  const solo = new Set<string>()

  function flush (): void {
    const batch = asked
    asked = new Map()
    const together: string[] = []
    for (const id of batch.keys()) {
      if (solo.has(id)) run([id], batch)
      else if (together.push(id) === MAX_BATCH) run(together.splice(0), batch)
    }
    if (together.length > 0) run(together, batch)
  }

  function run (ids: string[], waiters: Map<string, Waiter[]>): void {
    const at = now()
    queries++
    const started = process.hrtime.bigint()
    const observe = (outcome: 'ok' | 'error'): void => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9
      for (const listener of queryListeners) listener(seconds, outcome)
    }
    db.query<StatsRow>(STATS_SQL, [ids, timezone, at.toISOString()]).then(({ rows }) => {
      observe('ok')
      const byId = new Map(rows.map(row => [row.negocio_id, row]))
      for (const id of ids) {
        const row = byId.get(id)
        if (row === undefined) {
          for (const w of waiters.get(id) ?? []) w.reject(new AppError('not_found', `negocio ${id} does not exist`))
          continue
        }
        if (row.total_citas >= SOLO_CITAS) solo.add(id)
        else solo.delete(id)
        const snapshot: Snapshot = {
          stats: {
            negocio_id: row.negocio_id, citas_hoy: row.citas_hoy, total_citas: row.total_citas,
            citas_completadas: row.citas_completadas, citas_canceladas: row.citas_canceladas, timestamp: Math.floor(at.getTime() / 1000)
          },
          dayEndsAt: row.day_ends_at?.getTime() ?? Number.POSITIVE_INFINITY,
          version: Number(row.version)
        }
        for (const w of waiters.get(id) ?? []) w.resolve(snapshot)
      }
    }, (err: unknown) => {
      observe('error')
      for (const fn of unavailableListeners) fn(err)
      const failure = new AppError('unavailable', 'statistics are unavailable right now', { cause: err })
      for (const id of ids) for (const w of waiters.get(id) ?? []) w.reject(failure)
    })
  }

  /** Rejects with AppError('not_found') for an unknown negocio, AppError('unavailable') when the database cannot answer. */
  function computeSnapshot (negocioId: string): Promise<Snapshot> {
    return new Promise((resolve, reject) => {
      if (asked.size === 0) setImmediate(flush)
      const waiting = asked.get(negocioId)
      if (waiting === undefined) asked.set(negocioId, [{ resolve, reject }])
      else waiting.push({ resolve, reject })
    })
  }

  const compute = async (negocioId: string): Promise<Stats> => (await computeSnapshot(negocioId)).stats

  return {
    compute, computeSnapshot, now,
    onQuery: (listener: (seconds: number, outcome: 'ok' | 'error') => void) => { queryListeners.push(listener) },
    onUnavailable (fn: (err: unknown) => void): void { unavailableListeners.add(fn) },
    /** Statements sent (one per batch). */
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
