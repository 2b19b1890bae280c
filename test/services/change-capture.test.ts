import t, { type Test } from 'tap'
import { createPgSession } from '../../services/bus/pg-session.js'
import { createChangeCapture, type CaptureRole } from '../../services/bus/change-capture.js'
import { createBusOutbox } from '../../services/bus/outbox.js'
import type { BusMessage } from '../../services/bus/codec.js'
import { addNegocio, testDatabase, waitFor } from '../helper.js'

type CaptureOptions = Partial<Omit<Parameters<typeof createChangeCapture>[0], 'session' | 'onChanges'>>

/**
 * A session and a capture on a fresh database, as the live plugin wires them: the database's
 * owner, no superuser, connects (with the live plugin's lock_timeout).
 */
async function captureOn (t: Test, onChanges: (ids: string[]) => Promise<void>, opts: CaptureOptions = {}) {
  const db = await testDatabase(t, { owner: true })
  const roles: CaptureRole[] = []
  const errors: string[] = []
  const stalls: boolean[] = []
  // eslint-disable-next-line prefer-const -- the session's callbacks need it before it exists
  let capture: ReturnType<typeof createChangeCapture>
  const session = createPgSession({
    connection: { connectionString: db.url, options: '-c lock_timeout=1000' },
    channels: [],
    onConnect: () => capture.sessionUp(),
    onLost: () => capture.sessionDown()
  })
  capture = createChangeCapture({
    session,
    instance: 'first',
    onChanges,
    // Polls only when the test asks: the timer is far away.
    pollMs: 60_000,
    onRole: (role) => roles.push(role),
    onError: (_err, context) => errors.push(context),
    onStall: (stalled) => stalls.push(stalled),
    ...opts
  })
  t.teardown(async () => {
    capture.close()
    await session.close()
  })
  await session.start()
  await waitFor(() => capture.role === 'leader')
  return { db, capture, session, roles, errors, stalls }
}

const insertCitas = async (pool: import('pg').Pool, negocios: string[], each: number): Promise<void> => {
  await pool.query('INSERT INTO citas (negocio_id, fecha_hora) SELECT n, now() FROM unnest($1::text[]) n, generate_series(1, $2::int)', [negocios, each])
}

t.test('the leader drains the table in batches, hands every id on once, and starts with "*"', async (t) => {
  const handed: string[][] = []
  const { db, capture, roles } = await captureOn(t, async (ids) => { handed.push(ids) }, { batch: 10 })
  t.same(roles, ['follower', 'leader'])
  await capture.poll()
  t.same(handed, [['*']], 'a new leader asks everyone to resync: the old one may have drained changes it never passed on')
  for (const id of ['a', 'b', 'c']) await addNegocio(db.pool, id)
  await insertCitas(db.pool, ['a', 'b', 'c'], 9) // 27 rows: three batches
  const outcome = await capture.poll()
  t.same([...outcome.ids].sort(), ['a', 'b', 'c'])
  t.same(outcome, { drained: true, ids: outcome.ids, delivered: true, rows: 27 })
  t.same(handed.at(-1)?.sort(), ['a', 'b', 'c'])
  t.equal((await db.pool.query('SELECT count(*)::int AS n FROM citas_live_cambios')).rows[0].n, 0, 'the table is empty')
  t.equal(capture.changes, 3)
  const idle = await capture.poll()
  t.same([...idle.ids], [], 'nothing new: nothing handed on')
  t.equal(handed.length, 2)
})

t.test('changes that could not be delivered are kept and handed on with the next poll', async (t) => {
  let failing = true
  const handed: string[][] = []
  const { db, capture, errors } = await captureOn(t, async (ids) => {
    if (failing) throw new Error('bus down')
    handed.push(ids)
  })
  await addNegocio(db.pool, 'a')
  await insertCitas(db.pool, ['a'], 1)
  const failed = await capture.poll()
  t.equal(failed.delivered, false)
  t.match(errors, [/not delivered/])
  failing = false
  await addNegocio(db.pool, 'b')
  await insertCitas(db.pool, ['b'], 1)
  const ok = await capture.poll()
  t.equal(ok.delivered, true)
  t.same(handed, [['*']], 'kept with the "*" of the takeover, which covers them all')
})

t.test('more distinct ids than one message should carry are handed on as "*"', async (t) => {
  const handed: string[][] = []
  const { db, capture } = await captureOn(t, async (ids) => { handed.push(ids) }, { resyncIntervalMs: 0 })
  await capture.poll()
  const ids = Array.from({ length: 501 }, (_, i) => `n${i}`)
  await db.pool.query("INSERT INTO negocios (id, nombre) SELECT id, 'x' FROM unnest($1::text[]) id", [ids])
  await insertCitas(db.pool, ids, 1)
  const outcome = await capture.poll()
  t.same([...outcome.ids], ['*'], 'past 500 ids a drain reads no more of them')
  t.same(handed.at(-1), ['*'])
})

t.test('"*" is handed on at most once per interval, whatever writes it; named ids go out meanwhile', async (t) => {
  const handed: string[][] = []
  const { db, capture } = await captureOn(t, async (ids) => { handed.push(ids) }, { resyncIntervalMs: 60_000 })
  await capture.poll()
  t.same(handed, [['*']], 'the new leader\'s')
  await addNegocio(db.pool, 'a')
  for (let i = 0; i < 5; i++) await db.pool.query('TRUNCATE citas CASCADE') // each records '*'
  await insertCitas(db.pool, ['a'], 1)
  await capture.poll()
  t.same(handed, [['*'], ['a']], 'the TRUNCATEs\' "*" waits for the interval; the change of a goes out')
  t.same(await capture.poll(), { drained: true, ids: new Set(), delivered: true, rows: 0 })
  t.equal(handed.length, 2, 'and nothing more until the interval is over')
})

t.test('concurrent polls share the one queued behind the poll in flight', async (t) => {
  let calls = 0
  const { capture } = await captureOn(t, async () => { calls++ })
  const before = capture.polls
  await Promise.all([capture.poll(), capture.poll(), capture.poll(), capture.poll()])
  t.equal(capture.polls - before, 2, 'the one in flight and one more for the three that came during it')
  t.ok(calls >= 1)
})

t.test('a follower does not drain; it leads once the leader\'s session ends', async (t) => {
  const first = await captureOn(t, async () => {})
  const session = createPgSession({ connection: { connectionString: first.db.url }, channels: [], onConnect: () => second.sessionUp(), onLost: () => second.sessionDown() })
  const second = createChangeCapture({ session, instance: 'second', onChanges: async () => {}, pollMs: 60_000, takeoverMs: 50 })
  t.teardown(async () => {
    second.close()
    await session.close()
  })
  await session.start()
  await waitFor(() => second.role === 'follower')
  t.same(await second.poll(), { drained: false, ids: new Set(), delivered: true, rows: 0 })
  t.match((await first.db.pool.query('SELECT instance FROM citas_live_capture_leader')).rows, [{ instance: 'first' }])
  // The leader's process dies: its session ends (here, abruptly: the backend is terminated), long
  // before its lease would run out.
  first.capture.close()
  await first.db.pool.query('SELECT pg_terminate_backend(pid) FROM citas_live_capture_leader')
  await first.session.close()
  await waitFor(() => second.role === 'leader')
  t.match((await first.db.pool.query('SELECT instance FROM citas_live_capture_leader')).rows, [{ instance: 'second' }], 'the follower took over')
})

t.test('a leader whose session stops answering loses its lease when it runs out', async (t) => {
  const first = await captureOn(t, async () => {}, { leaseMs: 500 })
  const session = createPgSession({ connection: { connectionString: first.db.url }, channels: [], onConnect: () => second.sessionUp(), onLost: () => second.sessionDown() })
  const second = createChangeCapture({ session, instance: 'second', onChanges: async () => {}, pollMs: 60_000, takeoverMs: 50, leaseMs: 500 })
  t.teardown(async () => {
    second.close()
    await session.close()
  })
  await session.start()
  await waitFor(() => second.role === 'follower')
  // The first never polls again (its timer is a minute away): its session lives on, silent.
  await waitFor(() => second.role === 'leader')
  t.match((await first.db.pool.query('SELECT instance FROM citas_live_capture_leader')).rows, [{ instance: 'second' }])
  t.same(await first.capture.poll(), { drained: false, ids: new Set(), delivered: true, rows: 0 }, 'the old leader learns it at its next poll and drains nothing')
  t.equal(first.capture.role, 'follower')
})

t.test('a change table grown past the bound is emptied with TRUNCATE, its changes handed on', async (t) => {
  const handed: string[][] = []
  const { db, capture } = await captureOn(t, async (ids) => { handed.push(ids) }, { compactBytes: 8192, batch: 100 })
  await capture.poll()
  await addNegocio(db.pool, 'a')
  await addNegocio(db.pool, 'b')
  await insertCitas(db.pool, ['a'], 2000)
  await capture.poll() // drains in batches; the file is past 8 KiB
  const size = async (): Promise<number> => Number((await db.pool.query("SELECT pg_relation_size('citas_live_cambios') AS n")).rows[0].n)
  t.ok(await size() > 8192, 'deleted rows still take the file')
  await insertCitas(db.pool, ['b'], 1)
  await capture.poll()
  t.equal(capture.compactions, 1)
  t.equal(await size(), 0, 'the file is empty again')
  t.same(handed.slice(1), [['a'], ['b']], 'every change handed on, the one read before the TRUNCATE too')
})

t.test('a compaction that cannot have the lock at once gives up, the drain goes on as usual, and it is not tried again soon', async (t) => {
  const handed: string[][] = []
  // Writers queue behind the lock while a compaction waits for it: a retry at every poll would stall them over and over.
  const { db, capture } = await captureOn(t, async (ids) => { handed.push(ids) }, { compactBytes: 8192, batch: 100, compactRetryMs: 60_000 })
  await capture.poll()
  await addNegocio(db.pool, 'a')
  await insertCitas(db.pool, ['a'], 2000)
  await capture.poll()
  // A writer's transaction still open: its lock on the change table outlasts the compaction's wait.
  const writer = await db.pool.connect()
  t.teardown(() => writer.release())
  await writer.query('BEGIN')
  await insertCitas(writer as unknown as import('pg').Pool, ['a'], 1)
  await addNegocio(db.pool, 'b')
  await insertCitas(db.pool, ['b'], 1)
  await capture.poll()
  t.equal(capture.compactions, 0, 'not compacted')
  t.same(handed.at(-1), ['b'], 'the change committed meanwhile was drained as usual')
  await writer.query('COMMIT')
  await capture.poll()
  t.same(handed.at(-1), ['a'], 'and the writer\'s, once committed')
  t.equal(capture.compactions, 0, 'the file is still large, but the next try waits for compactRetryMs')
})

t.test('the leader vacuums the change table every vacuumRows drained: the file stays as small as one round of changes', async (t) => {
  const handed: string[][] = []
  // No compaction: only the vacuum keeps the file small.
  const { db, capture } = await captureOn(t, async (ids) => { handed.push(ids) }, { vacuumRows: 300, batch: 1000, compactBytes: 2 ** 40 })
  await capture.poll()
  await addNegocio(db.pool, 'a')
  const size = async (): Promise<number> => Number((await db.pool.query("SELECT pg_relation_size('citas_live_cambios') AS n")).rows[0].n)
  const sizes: number[] = []
  for (let round = 0; round < 10; round++) {
    await insertCitas(db.pool, ['a'], 300)
    await capture.poll() // drains the round and starts a vacuum; the next drain waits for it
    sizes.push(await size())
  }
  t.ok(capture.vacuums >= 9, `vacuumed after each round (${capture.vacuums})`)
  t.ok((sizes.at(-1) as number) <= 2 * (sizes[0] as number), `the file did not grow with the rounds: ${sizes.join(', ')} bytes`)
  t.equal(handed.length, 11, 'every round handed on')
  t.same(handed.slice(1), Array.from({ length: 10 }, () => ['a']))
})

t.test('drains that find 4,000 writes a second or more make the next poll wait longer', async (t) => {
  const handed: string[][] = []
  const { db, capture } = await captureOn(t, async (ids) => { handed.push(ids) }, { pollMs: 50 })
  await addNegocio(db.pool, 'a')
  await waitFor(() => handed.length > 0) // the first drain after taking the lead hands on '*'
  // 2,000 rows at once: more than 4 a ms since the drain before, at most 4 polls (200 ms) ago.
  await insertCitas(db.pool, ['a'], 2000)
  const found = handed.length
  await waitFor(() => handed.length > found)
  const busyAt = Date.now()
  const polls = capture.polls
  await waitFor(() => capture.polls > polls)
  t.ok(Date.now() - busyAt >= 95, `the next poll came ${Date.now() - busyAt} ms after a drain of 2,000 rows (the poll interval is 50 ms)`)
})

t.test('a drain that cannot complete (the table is locked) is told as a stall after stallMs, and its end once it drains again', async (t) => {
  const { db, capture, stalls } = await captureOn(t, async () => {}, { stallMs: 1000, pollMs: 50 })
  await waitFor(() => capture.polls > 0)
  const locker = await db.pool.connect()
  t.teardown(() => locker.release())
  await locker.query('BEGIN')
  await locker.query('LOCK TABLE citas_live_cambios IN ACCESS EXCLUSIVE MODE')
  await waitFor(() => capture.stalled)
  t.same(stalls, [true], 'said once')
  t.equal(capture.role, 'leader', 'the leader kept its lease: another would meet the same lock')
  await locker.query('COMMIT')
  await waitFor(() => !capture.stalled)
  t.same(stalls, [true, false])
})

t.test('the outbox keeps the newest unsent snapshot per negocio and sends it when the bus is back', async (t) => {
  const sent: BusMessage[] = []
  let up = false
  const errors: unknown[] = []
  const outbox = createBusOutbox(async (m) => {
    if (!up) throw new Error('down')
    sent.push(m)
  }, { retryMs: 20, onError: (err) => errors.push(err) })
  t.teardown(() => outbox.close())
  const snap = (version: number, total: number): BusMessage => ({
    origin: 'a',
    snapshots: [{ stats: { negocio_id: 'n1', citas_hoy: 0, total_citas: total, citas_completadas: 0, citas_canceladas: 0, timestamp: 1 }, dayEndsAt: 1, version }]
  })
  await t.rejects(outbox.publish(snap(2, 2)))
  await t.rejects(outbox.publish(snap(1, 1)), 'an older one is refused too...')
  await t.rejects(outbox.publish({ origin: 'a', changed: ['n1'] }), '...and changes are the capture\'s to keep')
  t.equal(outbox.pending, 1, '...and only the newest is kept')
  await waitFor(() => errors.length > 0)
  up = true
  await waitFor(() => sent.length === 1)
  t.same(sent, [snap(2, 2)])
  t.equal(outbox.pending, 0)
})

t.test('a row of the change table is never much larger than a negocio id; what is no id is not passed on', async (t) => {
  const handed: string[][] = []
  const { db, capture } = await captureOn(t, async (ids) => { handed.push(ids) })
  await capture.poll()
  for (const long of ['x'.repeat(65), 'x'.repeat(4 << 20)]) {
    await t.rejects(db.pool.query('INSERT INTO citas_live_cambios (negocio_id) VALUES ($1)', [long]), /value too long/, `${long.length} characters are refused, even to a superuser`)
  }
  await db.pool.query("INSERT INTO citas_live_cambios (negocio_id) VALUES ('bad id!'), (''), ('ok-1')")
  await capture.poll()
  t.same(handed.at(-1), ['ok-1'], 'only what can be a negocio id is handed on')
})
