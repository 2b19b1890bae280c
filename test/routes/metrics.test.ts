import t, { type Test } from 'tap'
import { createServer } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { addCita, addNegocio, build, Client, listen, serviceToken, sign, type TestDatabase, waitFor } from '../helper.js'

const TOKEN = 'metrics-token-0123456789'

/** The value of one sample line (`name{labels} value`), or undefined. */
function sample (text: string, name: string, labels = ''): number | undefined {
  const line = text.split('\n').find(l => l.startsWith(labels === '' ? `${name} ` : `${name}{${labels}} `))
  return line === undefined ? undefined : Number(line.split(' ').at(-1))
}

/** An app serving metrics on a port of its own: a free one, and another if some process takes it first. */
async function buildWithMetricsPort (t: Test, database: TestDatabase): Promise<{ app: FastifyInstance, port: number }> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort()
    try {
      const { app } = await build(t, { database, metrics: { port } })
      return { app, port }
    } catch (err) {
      if (attempt >= 10 || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err
    }
  }
}

async function freePort (): Promise<number> {
  return await new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number }
      s.close(() => resolve(port))
    })
  })
}

t.test('GET /metrics needs the token, and its figures move', async (t) => {
  const { app, db } = await build(t, { metrics: { token: TOKEN }, live: { changeCapture: false } })
  const { ws } = await listen(app)
  await addNegocio(db.pool, 'n1')
  const scrape = async () => {
    const res = await app.inject({ url: '/metrics', headers: { authorization: `Bearer ${TOKEN}` } })
    t.equal(res.statusCode, 200)
    t.match(res.headers['content-type'], /text\/plain/)
    return res.body
  }
  t.equal((await app.inject('/metrics')).statusCode, 401)
  t.equal((await app.inject({ url: '/metrics', headers: { authorization: 'Bearer wrong-token-wrong-token' } })).statusCode, 401)

  const before = await scrape()
  t.equal(sample(before, 'citas_live_connections', 'transport="websocket"'), 0)
  t.equal(sample(before, 'citas_live_connections', 'transport="sse"'), 0)
  t.ok(sample(before, 'citas_live_process_cpu_user_seconds_total') !== undefined, 'process metrics')

  const c = await Client.open(`${ws}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
  await c.subscribe('n1')
  await addCita(db.pool, 'n1', new Date())
  const notify = async (payload: unknown) => await app.inject({
    method: 'POST', url: '/notify/cita', headers: { authorization: `Bearer ${serviceToken()}` }, payload: payload as object
  })
  t.equal((await notify({ negocio_id: 'n1', action: 'created' })).statusCode, 200)
  await c.next()
  t.equal((await notify({ negocio_id: 'n1', action: 'nope' })).statusCode, 400)

  const after = await scrape()
  t.equal(sample(after, 'citas_live_connections', 'transport="websocket"'), 1)
  t.equal(sample(after, 'citas_live_subscriptions'), 1)
  t.equal(sample(after, 'citas_live_channels'), 1)
  t.equal(sample(after, 'citas_live_notifies_total', 'action="created",status="200"'), 1)
  t.equal(sample(after, 'citas_live_notifies_total', 'action="invalid",status="400"'), 1)
  t.equal(sample(after, 'citas_live_stats_query_duration_seconds_count', 'outcome="ok"'), 2)
  t.equal(sample(after, 'citas_live_notify_to_broadcast_seconds_count'), 1)
  t.ok((sample(after, 'citas_live_messages_sent_total') ?? 0) >= 2, 'messages sent counted')
  t.equal(sample(after, 'citas_live_bus_reconnects_total'), 0)
  t.match(after, /citas_live_messages_dropped_total/)
})

t.test('without a token or port nothing is exposed; with a port, it is served there', async (t) => {
  const plain = await build(t)
  t.equal((await plain.app.inject('/metrics')).statusCode, 404, 'not exposed by accident')

  const { app, port } = await buildWithMetricsPort(t, plain.db)
  t.equal((await app.inject('/metrics')).statusCode, 404, 'not on the public port')
  const res = await fetch(`http://127.0.0.1:${port}/metrics`)
  t.equal(res.status, 200)
  t.match(await res.text(), /citas_live_connections{transport="websocket"} 0/)
  t.equal((await fetch(`http://127.0.0.1:${port}/other`)).status, 404)
})

t.test('change capture: the leader counts its polls, and the business ids they drained', async (t) => {
  const { app, db } = await build(t, { metrics: { token: TOKEN } })
  await addNegocio(db.pool, 'n1')
  const scrape = async () => (await app.inject({ url: '/metrics', headers: { authorization: `Bearer ${TOKEN}` } })).body
  await waitFor(() => app.citasLive.live.status().changeCapture.role === 'leader')
  t.match(await scrape(), /citas_live_change_capture_info{mode="table",role="leader"} 1/)
  let polls = 0
  await waitFor(async () => { polls = sample(await scrape(), 'citas_live_change_capture_polls_total') ?? 0; return polls >= 1 })
  const changes = sample(await scrape(), 'citas_live_change_capture_changes_total') ?? 0
  await addCita(db.pool, 'n1', new Date())
  await waitFor(async () => (sample(await scrape(), 'citas_live_change_capture_changes_total') ?? 0) === changes + 1)
  t.pass('the drained id is counted')
  await waitFor(async () => (sample(await scrape(), 'citas_live_change_capture_polls_total') ?? 0) > polls)
  t.pass('polls keep rising on the leader')
})
