import t, { type Test } from 'tap'
import { createPgSession } from '../../services/pg-session.js'
import { createChangeCapture, type CaptureRole } from '../../services/change-capture.js'
import { createBusOutbox } from '../../services/bus-outbox.js'
import type { BusMessage } from '../../services/live-stats.js'
import { addNegocio, testDatabase, waitFor } from '../helper.js'

/** A session and a capture on a fresh database, as the live plugin wires them. */
async function captureOn (t: Test, onChanges: (ids: string[]) => Promise<void>, opts: { batch?: number } = {}) {
  const db = await testDatabase(t)
  const roles: CaptureRole[] = []
  const errors: string[] = []
  // eslint-disable-next-line prefer-const -- the session's callbacks need it before it exists
  let capture: ReturnType<typeof createChangeCapture>
  const session = createPgSession({
    connection: { connectionString: db.url },
    channels: [],
    onConnect: () => capture.sessionUp(),
    onLost: () => capture.sessionDown()
  })
  capture = createChangeCapture({
    session,
    onChanges,
    // Polls only when the test asks: the timer is far away.
    pollMs: 60_000,
    onRole: (role) => roles.push(role),
    onError: (_err, context) => errors.push(context),
    ...opts
  })
  t.teardown(async () => {
    capture.close()
    await session.close()
  })
  await session.start()
  await waitFor(() => capture.role === 'leader')
  return { db, capture, session, roles, errors }
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
  t.same(outcome, { drained: true, ids: outcome.ids, delivered: true })
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
  const { db, capture } = await captureOn(t, async (ids) => { handed.push(ids) })
  await capture.poll()
  const ids = Array.from({ length: 501 }, (_, i) => `n${i}`)
  await db.pool.query("INSERT INTO negocios (id, nombre) SELECT id, 'x' FROM unnest($1::text[]) id", [ids])
  await insertCitas(db.pool, ids, 1)
  const outcome = await capture.poll()
  t.equal(outcome.ids.size, 501)
  t.same(handed.at(-1), ['*'])
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
  const second = createChangeCapture({ session, onChanges: async () => {}, pollMs: 60_000, takeoverMs: 50 })
  t.teardown(async () => {
    second.close()
    await session.close()
  })
  await session.start()
  await waitFor(() => second.role === 'follower')
  t.same(await second.poll(), { drained: false, ids: new Set(), delivered: true })
  // The leader's process dies: its session ends (here, abruptly: the backend is terminated).
  first.capture.close()
  await first.db.pool.query(`SELECT pg_terminate_backend(pid) FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`)
  await first.session.close()
  await waitFor(() => second.role === 'leader')
  t.pass('the follower took over')
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
    snapshot: { stats: { negocio_id: 'n1', citas_hoy: 0, total_citas: total, citas_completadas: 0, citas_canceladas: 0, timestamp: 1 }, dayEndsAt: 1, version }
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

t.test('what is no negocio id, inserted by hand into the table any role may write, is not passed on', async (t) => {
  const handed: string[][] = []
  const { db, capture } = await captureOn(t, async (ids) => { handed.push(ids) })
  await capture.poll()
  await db.pool.query("INSERT INTO citas_live_cambios (negocio_id) VALUES ('bad id!'), (''), ('ok-1')")
  const outcome = await capture.poll()
  t.same([...outcome.ids], ['ok-1'])
  t.same(handed.at(-1), ['ok-1'])
})
