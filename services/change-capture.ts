import type { PgSession } from './pg-session.js'
import { isNegocioId } from './protocol.js'

/** Who drains the change table: one instance at a time, chosen by a session-level advisory lock. */
export type CaptureRole = 'leader' | 'follower' | 'down'

export interface ChangeCaptureOptions {
  session: Pick<PgSession, 'query' | 'connected'>
  /**
   * Called with the negocio ids drained in one poll ('*' = any may have changed). It must deliver them
   * to every instance (the local one and, through the bus, the others) and reject if it could not:
   * they are kept and given again with the next poll.
   */
  onChanges: (ids: string[]) => Promise<void>
  /** Called when this instance's role changes. */
  onRole?: (role: CaptureRole) => void
  onError?: (err: unknown, context: string) => void
  /** The change table cannot be read with the session up (`err`), or can be again (no `err`). Told once each way. */
  onFailing?: (err: unknown, message: string) => void
  /** The leader drains the table this often, in ms. Default 50. */
  pollMs?: number
  /** A follower tries to take over this often, in ms. Default 2000. */
  takeoverMs?: number
  /** A leader whose session ran no query for this long is taken for gone and its session ended. Default 10 s. */
  staleLeaderMs?: number
  /** Rows drained per statement; a full batch is followed by another at once. Default 10,000. */
  batch?: number
}

/** The advisory lock (two int4 keys) the leader holds: 'cita' and 1 (capture). */
const LOCK = [0x63697461, 1] as const

/** More distinct ids than this in one poll are sent as '*' (recompute every shown channel). */
const MAX_IDS = 500

export interface PollOutcome {
  /** False when this instance is not the leader (nothing was drained). */
  drained: boolean
  /** Negocio ids this poll drained. */
  ids: ReadonlySet<string>
  /** Whether every drained change (of this poll and earlier ones) reached the bus. */
  delivered: boolean
}

/**
 * Change capture from the table the citas trigger writes (db/migrations/004): no NOTIFY on the
 * write path. One instance, the one holding the advisory lock on its dedicated session, drains the
 * table every `pollMs` and hands the ids on; the others try to take over every `takeoverMs`. When
 * the leader's process dies its session ends and the lock with it; when its connection is dropped
 * silently, the followers see its backend idle for `staleLeaderMs` and end it. A new leader starts
 * with '*', since the old one may have drained changes it never delivered.
 */
export function createChangeCapture (opts: ChangeCaptureOptions) {
  const { session } = opts
  const pollMs = opts.pollMs ?? 50
  const takeoverMs = opts.takeoverMs ?? 2000
  const staleLeaderMs = opts.staleLeaderMs ?? 10_000
  const batch = opts.batch ?? 10_000
  const onError = opts.onError ?? (() => {})
  let role: CaptureRole = 'down'
  let timer: NodeJS.Timeout | undefined
  let closed = false
  /** Drained ids not yet delivered (the bus was down): given again with the next poll. */
  const pending = new Set<string>()
  let inFlight: Promise<PollOutcome> | undefined
  let queued: Promise<PollOutcome> | undefined
  let changes = 0
  let polls = 0
  let takeovers = 0
  /** Callers of sessionUp() waiting for its first leadership attempt. */
  let afterAttempt: Array<(role: CaptureRole) => void> = []
  /** The error code of a poll that keeps failing with the session up, until one succeeds. */
  let failing: unknown

  function setRole (next: CaptureRole): void {
    if (next === role) return
    role = next
    opts.onRole?.(next)
  }

  function arm (ms: number): void {
    if (closed || role === 'down') return
    if (timer !== undefined) clearTimeout(timer)
    timer = setTimeout(tick, ms)
    timer.unref()
  }

  function tick (): void {
    timer = undefined
    if (role === 'leader') {
      poll().then((outcome) => {
        if (failing !== undefined) {
          opts.onFailing?.(undefined, 'change capture: the change table can be read again')
          failing = undefined
        }
        arm(outcome.delivered ? pollMs : Math.max(pollMs, 1000))
      }, (err: unknown) => {
        // A lost session is told by the session; anything else (no table: the migrations were not
        // run; no privilege) is told once, and the poll slows down until it is fixed.
        // Errors of class 08 (connection) and 57 (operator intervention: a terminated backend, a
        // shutting-down server) are the session's loss, told by the session.
        const code = (err as { code?: unknown }).code
        const sessionLost = typeof code !== 'string' || /^(08|57)/.test(code)
        if (session.connected && !sessionLost && failing !== code) {
          failing = code
          opts.onFailing?.(err, code === '42P01'
            ? 'change capture: the table citas_live_cambios does not exist: run the migrations (npm run db:migrate); direct SQL writes do not reach dashboards until then'
            : 'change capture: the change table cannot be read')
        }
        arm(session.connected ? Math.max(pollMs, takeoverMs) : pollMs)
      })
    } else if (role === 'follower') {
      tryLead().catch((err: unknown) => onError(err, 'change capture: leader check failed')).finally(() => {
        arm(role === 'leader' ? 0 : takeoverMs)
        const waiting = afterAttempt
        afterAttempt = []
        for (const resolve of waiting) resolve(role)
      })
    }
  }

  async function tryLead (): Promise<void> {
    const { rows } = await session.query<{ leader: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS leader', [...LOCK])
    if (rows[0]?.leader === true) {
      takeovers++
      pending.add('*')
      setRole('leader')
      return
    }
    // The leader's session answers no query any more (its network dropped it without closing): end it.
    await session.query(`
      SELECT pg_terminate_backend(a.pid)
      FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 2
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND a.pid <> pg_backend_pid()
        AND greatest(a.query_start, a.state_change) < now() - make_interval(secs => $3::float8 / 1000)`,
    [...LOCK, staleLeaderMs])
  }

  async function drainOnce (): Promise<PollOutcome> {
    const ids = new Set<string>()
    for (let round = 0; round < 100; round++) {
      const { rows } = await session.query<{ negocio_id: string }>(
        'DELETE FROM citas_live_cambios WHERE ctid = ANY (ARRAY(SELECT ctid FROM citas_live_cambios LIMIT $1)) RETURNING negocio_id', [batch])
      // Any role may insert into the table: what is no negocio id (nor '*') is not passed on.
      for (const row of rows) if (row.negocio_id === '*' || isNegocioId(row.negocio_id)) ids.add(row.negocio_id)
      if (rows.length < batch) break
    }
    polls++
    changes += ids.size
    for (const id of ids) pending.add(id)
    if (pending.size === 0) return { drained: true, ids, delivered: true }
    const handing = pending.has('*') || pending.size > MAX_IDS ? ['*'] : [...pending]
    pending.clear()
    try {
      await opts.onChanges(handing)
      return { drained: true, ids, delivered: true }
    } catch (err) {
      for (const id of handing) pending.add(id)
      onError(err, 'change capture: changes drained but not delivered; retrying')
      return { drained: true, ids, delivered: false }
    }
  }

  /**
   * Drains the table with a poll that starts after this call (shared by every caller meanwhile) and
   * resolves once its changes were handed on. Resolves `drained: false` when this instance is not the leader.
   */
  function poll (): Promise<PollOutcome> {
    if (role !== 'leader') return Promise.resolve({ drained: false, ids: new Set(), delivered: true })
    if (inFlight === undefined) {
      const run = drainOnce().finally(() => { if (inFlight === run) inFlight = undefined })
      inFlight = run
      return run
    }
    queued ??= inFlight.catch(() => {}).then(() => {
      queued = undefined
      return poll()
    })
    return queued
  }

  return {
    /** The session connected: try to lead at once. Resolves with the role that attempt left it in. */
    sessionUp (): Promise<CaptureRole> {
      if (closed) return Promise.resolve(role)
      setRole('follower')
      arm(0)
      return new Promise((resolve) => { afterAttempt.push(resolve) })
    },
    /** The session was lost: its lock went with it. */
    sessionDown (): void {
      if (timer !== undefined) clearTimeout(timer)
      timer = undefined
      const waiting = afterAttempt
      afterAttempt = []
      for (const resolve of waiting) resolve('down')
      setRole('down')
    },
    poll,
    close (): void {
      closed = true
      if (timer !== undefined) clearTimeout(timer)
    },
    get role () { return role },
    /** Whether the change table could not be read by the last poll (missing table, no privilege). */
    get failing () { return failing !== undefined },
    /** Distinct negocio ids drained, summed over polls. */
    get changes () { return changes },
    get polls () { return polls },
    /** Times this instance became the leader. */
    get takeovers () { return takeovers }
  }
}

export type ChangeCapture = ReturnType<typeof createChangeCapture>
