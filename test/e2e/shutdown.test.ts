import t from 'tap'
import pg from 'pg'
import { request } from 'node:http'
import { addNegocio, build, Client, listen, serviceToken, sign, waitFor } from '../helper.js'

/**
 * A POST on a connection of its own that ends with the answer. Through fetch's keep-alive pool the
 * idle connection would hold app.close() open until Fastify's 72 s keepAliveTimeout (server.ts ends
 * such connections itself while closing; an app built here has no such hook).
 */
async function postWithoutKeepAlive (url: string, headers: Record<string, string>, body: unknown): Promise<{ status: number, body: unknown }> {
  return await new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', agent: false, headers: { ...headers, 'content-type': 'application/json' } }, (res) => {
      let text = ''
      res.on('data', (chunk: Buffer) => { text += chunk.toString() })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(JSON.stringify(body))
  })
}

t.test('close: every socket gets 1012, an in-flight notify still completes', async (t) => {
  // Without change capture the notify runs its own stats query, which the lock below holds up.
  const { app, db } = await build(t, { live: { changeCapture: false } })
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
  const inflight = postWithoutKeepAlive(`${http}/notify/cita`, { authorization: `Bearer ${serviceToken()}` }, { negocio_id: 'n1', action: 'created' })
  // Wait until the stats query is really blocked on the lock (a fixed sleep is flaky on a busy machine).
  await waitFor(async () => (await db.pool.query("SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")).rowCount === 1, 10_000)

  const closing = app.close()
  const closes = await Promise.all(clients.map(async c => await c.closed))
  for (const close of closes) t.same(close, { code: 1012, reason: 'server restarting' })

  await locker.query('COMMIT')
  const res = await inflight
  t.equal(res.status, 200, 'the notify that was in flight completes')
  t.match(res.body, { ok: true, negocio_id: 'n1' })
  await closing
  await t.rejects(fetch(`${http}/health`), 'no longer accepting')
})
