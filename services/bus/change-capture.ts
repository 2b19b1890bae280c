import type { PgSession } from './pg-session.js'
import { isNegocioId } from '../live/messages.js'

/** Who drains the change table: one instance at a time, the holder of the lease (db/migrations/005). */
export type CaptureRole = 'leader' | 'follower' | 'down'

export interface ChangeCaptureOptions {
  session: Pick<PgSession, 'query' | 'connected'>
  instance: string
  /** Delivers drained ids ('*': any) to every instance; a rejection keeps them for the next poll. */
  onChanges: (ids: string[]) => Promise<void>
  onRole?: (role: CaptureRole) => void
  onError?: (err: unknown, context: string) => void
  /** The change table cannot be read with the session up (`err`), or can again (no `err`); told once each way. */
  onFailing?: (err: unknown, message: string) => void
  /** No instance completed a drain for `stallMs` (`stalled`), or one did again; told once each way. */
  onStall?: (stalled: boolean, ageMs: number) => void
  /** The leader drains every pollMs, a follower checks the lease every takeoverMs; a silent leader's lease lasts leaseMs. */
  pollMs?: number
  takeoverMs?: number
  leaseMs?: number
  /** Capture counts as stopped when no drain completed for this long. */
  stallMs?: number
  /** Rows per drain; '*' once per resyncIntervalMs; VACUUM per vacuumRows deleted; TRUNCATE past compactBytes, compactRetryMs apart. */
  batch?: number
  resyncIntervalMs?: number
  vacuumRows?: number
  compactBytes?: number
  compactRetryMs?: number
}

/** More distinct ids than this in one poll are handed on as '*'. */
const MAX_IDS = 500
/** Writers wait behind a compaction's lock: it gives up quickly rather than stall them. */
const COMPACT_LOCK_TIMEOUT_MS = 50

/** `drained`: false when not the leader; `delivered`: every drained change, earlier ones too, reached the bus; `rows`: rows read. */
export interface PollOutcome { drained: boolean, ids: ReadonlySet<string>, delivered: boolean, rows: number }

interface DrainRow extends Record<string, unknown> { rows: number, ids: string[], bytes: string, leader: boolean }

/** Classes 08 (connection) and 57 (operator intervention) mean the session is lost. */
const isSessionLoss = (code: unknown): boolean => typeof code !== 'string' || /^(08|57)/.test(code)
/** lock_not_available: the change table is locked (told as a stall once it lasts). */
const LOCKED = '55P03'
/** Rows written per ms (4,000 writes a second) from which drains come less often, and larger. */
const BUSY_ROWS_PER_MS = 4

/** No NOTIFY on the write path: the lease holder drains the triggers' table; a new holder starts with '*' (undelivered drains). */
export function createChangeCapture (opts: ChangeCaptureOptions) {
  const { session, instance, pollMs = 50, takeoverMs = 1000, leaseMs = 10_000, batch = 10_000, stallMs = 15_000 } = opts
  const { resyncIntervalMs = 5000, vacuumRows = 5000, compactBytes = 512 * 1024, compactRetryMs = 10_000, onError = () => {} } = opts
  let role: CaptureRole = 'down'
  let timer: NodeJS.Timeout | undefined
  let closed = false
  /** Drained ids not yet delivered (bus down, or '*' waiting for its interval). */
  const pending = new Set<string>()
  let inFlight: Promise<PollOutcome> | undefined
  let queued: Promise<PollOutcome> | undefined
  let changes = 0
  let polls = 0
  let compactions = 0
  let vacuums = 0
  let deletedSinceVacuum = 0
  let compactTriedAt = Number.NEGATIVE_INFINITY
  let starAt = Number.NEGATIVE_INFINITY
  let compactDue = false
  /** When the last drain renewed the lease (0: the next one does), and how often one does. */
  let renewedAt = 0
  let idleMs = pollMs
  const renewMs = Math.min(250, leaseMs / 4)
  /** Callers of sessionUp() waiting for its first leadership attempt. */
  const afterAttempt: Array<(role: CaptureRole) => void> = []
  /** The error code of a poll that keeps failing with the session up, until one succeeds. */
  let failing: unknown
  /** On this instance's clock, when the last drain completed (its own, or one read in the lease); at first, the start. */
  let drainedAt = Date.now()
  let drainStartedAt = Number.NEGATIVE_INFINITY
  /** Rows the last drain read per ms since the one before started. */
  let writeRate = 0
  let stalled = false

  function setRole (next: CaptureRole): void {
    if (next === role) return
    role = next
    renewedAt = 0
    opts.onRole?.(next)
  }

  function settleAttempt (result: CaptureRole): void {
    for (const resolve of afterAttempt.splice(0)) resolve(result)
  }

  const drainAge = (): number => Date.now() - drainedAt

  function checkStall (): void {
    const age = drainAge()
    const now = session.connected && age > stallMs
    if (now === stalled) return
    stalled = now
    opts.onStall?.(now, age)
  }

  function arm (ms: number): void {
    if (closed || role === 'down') return
    clearTimeout(timer)
    timer = setTimeout(tick, ms).unref()
  }

  function working (): void {
    if (failing === undefined) return
    opts.onFailing?.(undefined, 'change capture: the change table can be read again')
    failing = undefined
  }

  /** A lost session is told by the session, a lock as a stall; anything else once, until a query works. */
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
    if (role === 'leader') {
      poll().then((outcome) => {
        working()
        checkStall()
        // Idle, or past 4,000 writes/s, it doubles up to 4 pollMs: a quarter of the idle load; larger drains cost less per write.
        idleMs = outcome.ids.size > 0 && writeRate < BUSY_ROWS_PER_MS ? pollMs : Math.min(idleMs * 2, 4 * pollMs)
        arm(outcome.delivered ? idleMs : Math.max(pollMs, 1000))
      }, (err: unknown) => {
        failed(err)
        checkStall()
        // Locked: keep the lease (another leader would meet the same lock) and try again.
        if ((err as { code?: unknown }).code === LOCKED && session.connected) renew().catch(failed).finally(() => { arm(pollMs) })
        else arm(session.connected ? Math.max(pollMs, takeoverMs) : pollMs)
      })
    } else if (role === 'follower') {
      tryLead().then(working, failed).finally(() => {
        checkStall()
        arm(role === 'leader' ? 0 : takeoverMs)
        settleAttempt(role)
      })
    }
  }

  /** Takes the lease when it ran out or its holder's backend is gone (another role's, start time hidden, counts as there). */
  async function tryLead (): Promise<void> {
    const { rows } = await session.query<{ leader: boolean, age_ms: number | null }>(`
      WITH me AS (SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()), taken AS (
        INSERT INTO citas_live_capture_leader AS l (id, instance, pid, backend_start, lease_until)
        SELECT true, $1, me.pid, me.backend_start, clock_timestamp() + make_interval(secs => $2::float8 / 1000) FROM me
        ON CONFLICT (id) DO UPDATE SET instance = excluded.instance, pid = excluded.pid, backend_start = excluded.backend_start, lease_until = excluded.lease_until
        WHERE l.lease_until < clock_timestamp() OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a
          WHERE a.pid = l.pid AND (a.backend_start = l.backend_start OR a.backend_start IS NULL)) RETURNING 1)
      SELECT EXISTS (SELECT 1 FROM taken) AS leader,
        (SELECT (extract(epoch FROM clock_timestamp() - drained_at) * 1000)::float8 FROM citas_live_capture_leader) AS age_ms`, [instance, leaseMs])
    const row = rows[0]
    if (row?.age_ms != null) drainedAt = Date.now() - row.age_ms
    if (row?.leader === true) {
      pending.add('*')
      setRole('leader')
    }
  }

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

  /** Drains a batch (MAX_IDS + 1 ids at most); every renewMs it also renews the lease, else an idle poll writes nothing. */
  async function drainBatch (): Promise<DrainRow> {
    if (Date.now() - renewedAt < renewMs) {
      const { rows } = await session.query<DrainRow>(`
        WITH d AS (DELETE FROM citas_live_cambios WHERE ctid = ANY (ARRAY(SELECT ctid FROM citas_live_cambios LIMIT $1)) RETURNING negocio_id)
        SELECT (SELECT count(*) FROM d)::int AS rows, ARRAY(SELECT DISTINCT negocio_id FROM d LIMIT $2) AS ids,
          CASE WHEN EXISTS (SELECT 1 FROM d) THEN pg_relation_size('citas_live_cambios') ELSE 0 END::text AS bytes, true AS leader`,
      [batch, MAX_IDS + 1], 'citas_live_drain')
      return rows[0] as DrainRow
    }
    renewedAt = Date.now()
    const { rows } = await session.query<DrainRow>(`
      WITH d AS (DELETE FROM citas_live_cambios WHERE ctid = ANY (ARRAY(SELECT ctid FROM citas_live_cambios LIMIT $1)) RETURNING negocio_id),
      lease AS (UPDATE citas_live_capture_leader SET drained_at = clock_timestamp(), lease_until = clock_timestamp() + make_interval(secs => $4::float8 / 1000)
        WHERE instance = $3 AND pid = pg_backend_pid() RETURNING 1)
      SELECT (SELECT count(*) FROM d)::int AS rows, ARRAY(SELECT DISTINCT negocio_id FROM d LIMIT $2) AS ids,
        pg_relation_size('citas_live_cambios')::text AS bytes, EXISTS (SELECT 1 FROM lease) AS leader`, [batch, MAX_IDS + 1, instance, leaseMs], 'citas_live_drain_renew')
    return rows[0] as DrainRow
  }

  /** Keeps the table a few pages whatever autovacuum does; never shrinks the file (writers would queue on its lock): compact() does. */
  async function vacuum (): Promise<void> {
    deletedSinceVacuum = 0
    await session.query('VACUUM (SKIP_LOCKED, TRUNCATE false) citas_live_cambios')
    vacuums++
  }

  /** Reads then TRUNCATEs a table a burst left large; undefined when the lock, which writers queue behind, was not had in time. */
  async function compact (): Promise<DrainRow | undefined> {
    compactTriedAt = Date.now()
    try {
      const results = await session.query(`
        BEGIN;
        SET LOCAL lock_timeout = ${COMPACT_LOCK_TIMEOUT_MS};
        LOCK TABLE citas_live_cambios IN ACCESS EXCLUSIVE MODE;
        SELECT count(*)::int AS rows, ARRAY(SELECT DISTINCT negocio_id FROM citas_live_cambios LIMIT ${MAX_IDS + 1}) AS ids, '0' AS bytes,
          EXISTS (SELECT 1 FROM citas_live_capture_leader WHERE pid = pg_backend_pid()) AS leader FROM citas_live_cambios;
        TRUNCATE citas_live_cambios;
        UPDATE citas_live_capture_leader SET drained_at = clock_timestamp() WHERE pid = pg_backend_pid();
        COMMIT;`) as unknown as Array<{ rows: DrainRow[] }>
      compactions++
      deletedSinceVacuum = 0
      return results.find(r => r.rows?.[0]?.ids !== undefined)?.rows[0]
    } catch (err) {
      await session.query('ROLLBACK').catch(() => {})
      if ((err as { code?: unknown }).code === LOCKED) return undefined
      throw err
    }
  }

  async function drainOnce (): Promise<PollOutcome> {
    const ids = new Set<string>()
    let rows = 0
    const startedAt = Date.now()
    const since = startedAt - drainStartedAt
    drainStartedAt = startedAt
    let compacted: DrainRow | undefined
    if (compactDue && Date.now() - compactTriedAt >= compactRetryMs) {
      compactDue = false
      compacted = await compact()
    }
    for (let round = 0; round < 100; round++) {
      const row = compacted ?? await drainBatch()
      if (!row.leader) {
        lostLease()
        return { drained: false, ids, delivered: true, rows }
      }
      if (row.ids.length > MAX_IDS) ids.add('*')
      else for (const id of row.ids) if (id === '*' || isNegocioId(id)) ids.add(id)
      deletedSinceVacuum += row.rows
      rows += row.rows
      if (Number(row.bytes) > compactBytes) compactDue = true
      if (compacted !== undefined || row.rows < batch) break
    }
    drainedAt = Date.now()
    writeRate = rows / Math.max(since, 1)
    polls++
    // Not awaited: what this drain found is handed on now; the next drain queues behind it on the session.
    if (deletedSinceVacuum >= vacuumRows) vacuum().catch(failed)
    changes += ids.size
    for (const id of ids) pending.add(id)
    if (pending.size > MAX_IDS) {
      pending.clear()
      pending.add('*')
    }
    // '*' waits for its interval: what is named meanwhile still goes out.
    const star = pending.has('*') && Date.now() - starAt >= resyncIntervalMs
    const handing = star ? ['*'] : [...pending].filter(id => id !== '*')
    if (handing.length === 0) return { drained: true, ids, delivered: true, rows }
    if (star) pending.clear()
    else for (const id of handing) pending.delete(id)
    try {
      await opts.onChanges(handing)
      if (star) starAt = Date.now()
      return { drained: true, ids, delivered: true, rows }
    } catch (err) {
      for (const id of handing) pending.add(id)
      onError(err, 'change capture: changes drained but not delivered; retrying')
      return { drained: true, ids, delivered: false, rows }
    }
  }

  /** A drain that starts after this call (shared by every caller meanwhile), resolved once its changes were handed on. */
  function poll (): Promise<PollOutcome> {
    if (role !== 'leader') return Promise.resolve({ drained: false, ids: new Set(), delivered: true, rows: 0 })
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
    /** The session connected: try to lead at once; resolves with the role that attempt left it in. */
    sessionUp (): Promise<CaptureRole> {
      if (closed) return Promise.resolve(role)
      setRole('follower')
      arm(0)
      return new Promise((resolve) => { afterAttempt.push(resolve) })
    },
    /** The session was lost, and with it this instance's claim to the lease. */
    sessionDown (): void {
      clearTimeout(timer)
      settleAttempt('down')
      setRole('down')
    },
    poll,
    close (): void {
      closed = true
      clearTimeout(timer)
    },
    get role () { return role },
    get failing () { return failing !== undefined },
    get stalled () { return stalled },
    get drainAgeMs () { return drainAge() },
    /** Distinct negocio ids drained, summed over polls. */
    get changes () { return changes },
    get polls () { return polls },
    get compactions () { return compactions },
    get vacuums () { return vacuums }
  }
}
