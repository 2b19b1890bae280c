import type { PgSession } from './pg-session.js'
import { isNegocioId } from '../live/messages.js'

/** Who drains the change table: one instance at a time, the holder of the lease (db/migrations/005). */
export type CaptureRole = 'leader' | 'follower' | 'down'

export interface ChangeCaptureOptions {
  session: Pick<PgSession, 'query' | 'connected'>
  /** This instance's name in the lease (its id on the bus). */
  instance: string
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
  /** No instance completed a drain for `stallMs` (`stalled`), or one did again. Told once each way. */
  onStall?: (stalled: boolean, ageMs: number) => void
  /** The leader drains the table this often, in ms. Default 50. */
  pollMs?: number
  /** A follower checks the lease (and takes it when free) this often, in ms. Default 1000. */
  takeoverMs?: number
  /**
   * How long a lease lasts without renewal, in ms: a leader whose session stopped answering (its
   * network dropped it without closing) is replaced after this. Default 10 s.
   */
  leaseMs?: number
  /** Rows drained per statement; a full batch is followed by another at once. Default 10,000. */
  batch?: number
  /** Capture counts as stopped when no instance completed a drain for this long, in ms. Default 15 s. */
  stallMs?: number
  /** '*' (every shown channel may have changed) is handed on at most this often, in ms. Default 5000. */
  resyncIntervalMs?: number
  /** The change table is compacted (emptied with TRUNCATE) once its file passes this many bytes. Default 512 KiB. */
  compactBytes?: number
}

/** More distinct ids than this in one poll are handed on as '*' (recompute every shown channel). */
export const MAX_IDS = 500

/** How long a compaction may wait for writers' locks on the change table (they wait behind it meanwhile). */
const COMPACT_LOCK_TIMEOUT_MS = 50

export interface PollOutcome {
  /** False when this instance is not the leader (nothing was drained). */
  drained: boolean
  /** Negocio ids this poll drained. */
  ids: ReadonlySet<string>
  /** Whether every drained change (of this poll and earlier ones) reached the bus. */
  delivered: boolean
}

interface DrainRow extends Record<string, unknown> {
  rows: number
  ids: string[]
  bytes: string
  leader: boolean
}

/** Errors of class 08 (connection) and 57 (operator intervention: a terminated backend, a shutting-down server) are the session's loss. */
const isSessionLoss = (code: unknown): boolean => typeof code !== 'string' || /^(08|57)/.test(code)
/** lock_not_available: the change table is locked (capture stalls, and says so after stallMs). */
const LOCKED = '55P03'

/**
 * Change capture from the table the citas triggers write (db/migrations/004 and 005): no NOTIFY on
 * the write path. One instance, the holder of the lease in citas_live_capture_leader (a row only
 * citas-live's role may write, tied to the holder's session), drains the table every `pollMs` and
 * hands the ids on; the others check the lease every `takeoverMs` and take it when its holder's
 * session is gone or its lease ran out. A new leader starts with '*', since the old one may have
 * drained changes it never delivered. Each drain records its end in the lease row, so every
 * instance can tell when capture has stopped (`stalled`), whatever stopped it.
 */
export function createChangeCapture (opts: ChangeCaptureOptions) {
  const { session, instance } = opts
  const pollMs = opts.pollMs ?? 50
  const takeoverMs = opts.takeoverMs ?? 1000
  const leaseMs = opts.leaseMs ?? 10_000
  const batch = opts.batch ?? 10_000
  const stallMs = opts.stallMs ?? 15_000
  const resyncIntervalMs = opts.resyncIntervalMs ?? 5000
  const compactBytes = opts.compactBytes ?? 512 * 1024
  const onError = opts.onError ?? (() => {})
  let role: CaptureRole = 'down'
  let timer: NodeJS.Timeout | undefined
  let closed = false
  /** Drained ids not yet delivered (the bus was down, or '*' waits for its interval): given again with the next poll. */
  const pending = new Set<string>()
  let inFlight: Promise<PollOutcome> | undefined
  let queued: Promise<PollOutcome> | undefined
  let changes = 0
  let polls = 0
  let takeovers = 0
  let compactions = 0
  let starAt = Number.NEGATIVE_INFINITY
  let compactDue = false
  /** Callers of sessionUp() waiting for its first leadership attempt. */
  let afterAttempt: Array<(role: CaptureRole) => void> = []
  /** The error code of a poll that keeps failing with the session up, until one succeeds. */
  let failing: unknown
  const startedAt = Date.now()
  /** When, on this instance's clock, the last drain completed (this instance's, or one it read of in the lease). */
  let drainedAt: number | undefined
  let stalled = false

  function setRole (next: CaptureRole): void {
    if (next === role) return
    role = next
    opts.onRole?.(next)
  }

  /** Age of the last completed drain in ms; until one is known, the time since this instance started. */
  function drainAge (): number {
    return Date.now() - (drainedAt ?? startedAt)
  }

  function checkStall (): void {
    const age = drainAge()
    const now = session.connected && age > stallMs
    if (now === stalled) return
    stalled = now
    opts.onStall?.(now, age)
  }

  function arm (ms: number): void {
    if (closed || role === 'down') return
    if (timer !== undefined) clearTimeout(timer)
    timer = setTimeout(tick, ms)
    timer.unref()
  }

  /** A query of the capture that worked again after failing: said once. */
  function working (): void {
    if (failing === undefined) return
    opts.onFailing?.(undefined, 'change capture: the change table can be read again')
    failing = undefined
  }

  /**
   * A query of the capture failed. A lost session is told by the session; a locked change table is
   * told as a stall once it lasts; anything else (the migrations were not run, no privilege) is
   * told once, until a query works again.
   */
  function failed (err: unknown): void {
    const code = (err as { code?: unknown }).code
    if (!session.connected || isSessionLoss(code) || code === LOCKED || failing === code) return
    failing = code
    const missing = /relation "([^"]+)"/.exec((err as Error).message ?? '')?.[1] ?? 'citas_live_cambios'
    opts.onFailing?.(err, code === '42P01'
      ? `change capture: the table ${missing} does not exist: run the migrations (npm run db:migrate); direct SQL writes do not reach dashboards until then`
      : 'change capture: the change table or the capture lease cannot be used by this role')
  }

  function tick (): void {
    timer = undefined
    if (role === 'leader') {
      poll().then((outcome) => {
        working()
        checkStall()
        arm(outcome.delivered ? pollMs : Math.max(pollMs, 1000))
      }, (err: unknown) => {
        failed(err)
        checkStall()
        if ((err as { code?: unknown }).code !== LOCKED || !session.connected) {
          arm(session.connected ? Math.max(pollMs, takeoverMs) : pollMs)
          return
        }
        // The change table is locked: keep the lease (another leader would meet the same lock)
        // and try again; each attempt waits for the lock up to the session's lock_timeout.
        renew().catch(failed).finally(() => { arm(pollMs) })
      })
    } else if (role === 'follower') {
      tryLead().then(working, failed).finally(() => {
        checkStall()
        arm(role === 'leader' ? 0 : takeoverMs)
        const waiting = afterAttempt
        afterAttempt = []
        for (const resolve of waiting) resolve(role)
      })
    }
  }

  /**
   * Takes the lease when it is free: its holder's session is gone (its backend is no longer in
   * pg_stat_activity; one of another role, whose start time is hidden, counts as there) or its
   * lease ran out. Otherwise reads how long ago the last drain completed.
   */
  async function tryLead (): Promise<void> {
    const { rows } = await session.query<{ leader: boolean, age_ms: number | null }>(`
      WITH me AS (SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()),
      taken AS (
        INSERT INTO citas_live_capture_leader AS l (id, instance, pid, backend_start, lease_until)
        SELECT true, $1, me.pid, me.backend_start, clock_timestamp() + make_interval(secs => $2::float8 / 1000) FROM me
        ON CONFLICT (id) DO UPDATE SET instance = excluded.instance, pid = excluded.pid,
          backend_start = excluded.backend_start, lease_until = excluded.lease_until
        WHERE l.lease_until < clock_timestamp()
          OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                         WHERE a.pid = l.pid AND (a.backend_start = l.backend_start OR a.backend_start IS NULL))
        RETURNING 1)
      SELECT EXISTS (SELECT 1 FROM taken) AS leader,
             (SELECT (extract(epoch FROM clock_timestamp() - drained_at) * 1000)::float8 FROM citas_live_capture_leader) AS age_ms`,
    [instance, leaseMs])
    const row = rows[0]
    if (row?.age_ms != null) drainedAt = Date.now() - row.age_ms
    if (row?.leader === true) {
      takeovers++
      pending.add('*')
      setRole('leader')
    }
  }

  /** Extends the lease without a drain; a lease that is no longer this session's makes it a follower. */
  async function renew (): Promise<void> {
    const { rows } = await session.query(
      `UPDATE citas_live_capture_leader SET lease_until = clock_timestamp() + make_interval(secs => $2::float8 / 1000)
       WHERE instance = $1 AND pid = pg_backend_pid() RETURNING 1`, [instance, leaseMs])
    if (rows.length === 0) lostLease()
  }

  function lostLease (): void {
    if (role !== 'leader') return
    onError(new Error('another instance holds the capture lease now'), 'change capture: lease lost')
    setRole('follower')
  }

  /**
   * One statement: drains a batch of the change table, and renews the lease with the drain's end
   * recorded. Returns the rows it removed, at most MAX_IDS + 1 distinct ids (so the bytes read stay
   * bounded), the table's size, and whether the lease is still this session's.
   */
  async function drainBatch (): Promise<DrainRow> {
    const { rows } = await session.query<DrainRow>(`
      WITH d AS (
        DELETE FROM citas_live_cambios WHERE ctid = ANY (ARRAY(SELECT ctid FROM citas_live_cambios LIMIT $1))
        RETURNING negocio_id),
      lease AS (
        UPDATE citas_live_capture_leader SET drained_at = clock_timestamp(),
          lease_until = clock_timestamp() + make_interval(secs => $4::float8 / 1000)
        WHERE instance = $3 AND pid = pg_backend_pid() RETURNING 1)
      SELECT (SELECT count(*) FROM d)::int AS rows,
             ARRAY(SELECT DISTINCT negocio_id FROM d LIMIT $2) AS ids,
             pg_relation_size('citas_live_cambios')::text AS bytes,
             EXISTS (SELECT 1 FROM lease) AS leader`,
    [batch, MAX_IDS + 1, instance, leaseMs])
    return rows[0] as DrainRow
  }

  /**
   * Empties the change table with TRUNCATE (its file back to nothing: deleted rows no longer pile
   * up for a vacuum to remove) after reading what it holds, under a lock that writers wait behind
   * for at most COMPACT_LOCK_TIMEOUT_MS; undefined when the lock was not had in time.
   */
  async function compact (): Promise<DrainRow | undefined> {
    try {
      const results = await session.query(`
        BEGIN;
        SET LOCAL lock_timeout = ${COMPACT_LOCK_TIMEOUT_MS};
        LOCK TABLE citas_live_cambios IN ACCESS EXCLUSIVE MODE;
        SELECT count(*)::int AS rows,
               ARRAY(SELECT DISTINCT negocio_id FROM citas_live_cambios LIMIT ${MAX_IDS + 1}) AS ids,
               '0' AS bytes,
               EXISTS (SELECT 1 FROM citas_live_capture_leader WHERE pid = pg_backend_pid()) AS leader
          FROM citas_live_cambios;
        TRUNCATE citas_live_cambios;
        UPDATE citas_live_capture_leader SET drained_at = clock_timestamp() WHERE pid = pg_backend_pid();
        COMMIT;`) as unknown as Array<{ rows: DrainRow[] }>
      compactions++
      return results.find(r => r.rows?.[0]?.ids !== undefined)?.rows[0]
    } catch (err) {
      await session.query('ROLLBACK').catch(() => {})
      if ((err as { code?: unknown }).code === LOCKED) return undefined
      throw err
    }
  }

  async function drainOnce (): Promise<PollOutcome> {
    const ids = new Set<string>()
    let compacted: DrainRow | undefined
    if (compactDue) {
      compactDue = false
      compacted = await compact()
    }
    for (let round = 0; round < 100; round++) {
      const row = compacted ?? await drainBatch()
      if (!row.leader) {
        lostLease()
        return { drained: false, ids, delivered: true }
      }
      if (row.ids.length > MAX_IDS) ids.add('*')
      else for (const id of row.ids) if (id === '*' || isNegocioId(id)) ids.add(id)
      if (Number(row.bytes) > compactBytes) compactDue = true
      if (compacted !== undefined || row.rows < batch) break
    }
    drainedAt = Date.now()
    polls++
    changes += ids.size
    for (const id of ids) pending.add(id)
    if (pending.size > MAX_IDS) {
      pending.clear()
      pending.add('*')
    }
    // '*' waits for its interval: what is named meanwhile still goes out.
    const star = pending.has('*') && Date.now() - starAt >= resyncIntervalMs
    const handing = star ? ['*'] : [...pending].filter(id => id !== '*')
    if (handing.length === 0) return { drained: true, ids, delivered: true }
    if (star) pending.clear()
    else for (const id of handing) pending.delete(id)
    try {
      await opts.onChanges(handing)
      if (star) starAt = Date.now()
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
    /** The session was lost: with it, this instance's claim to the lease. */
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
    /** Whether no instance completed a drain for longer than `stallMs` (as far as this one knows). */
    get stalled () { return stalled },
    /** How long ago the last drain completed, in ms (since this instance started, until it knows of one). */
    get drainAgeMs () { return drainAge() },
    /** Distinct negocio ids drained, summed over polls. */
    get changes () { return changes },
    get polls () { return polls },
    /** Times this instance became the leader. */
    get takeovers () { return takeovers },
    /** Times the change table was emptied with TRUNCATE. */
    get compactions () { return compactions }
  }
}

export type ChangeCapture = ReturnType<typeof createChangeCapture>
