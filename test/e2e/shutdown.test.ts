import t from 'tap'
import pg from 'pg'
import { addNegocio, build, Client, listen, serviceToken, sign, waitFor } from '../helper.js'

t.test('close: every socket gets 1012, an in-flight notify still completes', async (t) => {
  const { app, db } = await build(t)
  const { ws, http } = await listen(app)
  await addNegocio(db.pool, 'n1')
  const clients = await Promise.all(Array.from({ length: 20 }, async () => {
    const c = await Client.open(`${ws}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
    await c.subscribe('n1')
    return c
  }))

  // Hold the stats query behind a table lock so the notify is in flight when close() starts.
  const locker = new pg.Client({ connectionString: db.url })
  await locker.connect()
  t.teardown(() => locker.end())
  await locker.query('BEGIN')
  await locker.query('LOCK TABLE citas IN ACCESS EXCLUSIVE MODE')
  const inflight = fetch(`${http}/notify/cita`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${serviceToken()}` },
    body: JSON.stringify({ negocio_id: 'n1', action: 'created' })
  })
  // Wait until the stats query is really blocked on the lock (a fixed sleep is flaky on a busy machine).
  await waitFor(async () => (await db.pool.query("SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")).rowCount === 1, 10_000)

  const closing = app.close()
  const closes = await Promise.all(clients.map(async c => await c.closed))
  for (const close of closes) t.same(close, { code: 1012, reason: 'server restarting' })

  await locker.query('COMMIT')
  const res = await inflight
  t.equal(res.status, 200, 'the notify that was in flight completes')
  t.match(await res.json(), { ok: true, negocio_id: 'n1' })
  await closing
  await t.rejects(fetch(`${http}/health`), 'no longer accepting')
})
