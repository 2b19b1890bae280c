import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { addCita, addNegocio, build, Client, handshake, leading, listen, serviceToken, sign, testDatabase, waitFor, type Built, type TestDatabase } from '../helper.js'
import { tcpProxyFor } from '../fixtures/proxy.js'

// Several instances on one database cost it what one instance does: the capture leader computes what
// any instance shows and publishes the figures, and a follower hands its notifies to the leader.

const busSecret = randomBytes(24).toString('hex')
const total = (c: Client): number | undefined => c.received.filter(m => m.type === 'stats').at(-1)?.data.total_citas
const queries = (fleet: Built[]): number => fleet.reduce((sum, { app }) => sum + app.citasLive.stats.queryCount, 0)

/** Three instances (the first leads capture), each with a subscriber to n1 and n2. */
async function fleetOf (t: Test, db: TestDatabase, live: Record<string, unknown> = {}) {
  await addNegocio(db.pool, 'n1')
  await addNegocio(db.pool, 'n2')
  const fleet: Built[] = []
  for (const id of ['a', 'b', 'c']) {
    fleet.push(await build(t, { database: db, live: { busSecret, instanceId: id, ...live } }))
    if (id === 'a') await leading((fleet[0] as Built).app)
  }
  const clients: Client[] = []
  const urls: string[] = []
  for (const { app } of fleet) {
    const { ws, http } = await listen(app)
    urls.push(http)
    const client = await Client.open(`${ws}/ws?token=${sign({ sub: 'u', negocios: ['n1', 'n2'] })}`, t)
    await client.subscribe('n1')
    await client.subscribe('n2')
    clients.push(client)
  }
  return { fleet, clients, urls, leader: fleet[0] as Built, followers: fleet.slice(1) }
}

t.test('a direct SQL write costs the database one stats query, whatever the number of instances', async (t) => {
  const db = await testDatabase(t)
  const { fleet, clients, followers } = await fleetOf(t, db)
  t.same(followers.map(f => f.app.citasLive.live.status().changeCapture.role), ['follower', 'follower'])
  let citas = 0
  /** One direct write, seen by every subscriber; what it cost the fleet in stats queries. */
  async function write (): Promise<number> {
    const before = queries(fleet)
    await addCita(db.pool, 'n1', new Date())
    citas++
    await waitFor(() => clients.every(c => total(c) === citas))
    return queries(fleet) - before
  }
  // The first changes tell the leader who shows what: an instance it did not know of computes once
  // itself, and says so. From then on the leader computes for everyone.
  await waitFor(async () => await write() === 1)

  const followerQueries = followers.map(f => f.app.citasLive.stats.queryCount)
  const costs: number[] = []
  for (let i = 0; i < 5; i++) costs.push(await write())
  t.same(costs, [1, 1, 1, 1, 1], 'each write, one query for the three instances together')
  t.same(followers.map(f => f.app.citasLive.stats.queryCount), followerQueries, 'none of them on a follower')
})

t.test('a notify that reaches a follower is computed by the capture leader, and answered with its figures', async (t) => {
  const db = await testDatabase(t)
  const { clients, urls, followers } = await fleetOf(t, db)
  const follower = followers[0] as Built
  const http = urls[1] as string
  const before = follower.app.citasLive.stats.queryCount
  const forwards = follower.app.citasLive.live.forwards
  // A write the trigger never sees: only the notify says it happened.
  const c = await db.pool.connect()
  await c.query('SET session_replication_role = replica')
  await c.query("INSERT INTO citas (negocio_id, fecha_hora) VALUES ('n1', now())")
  await c.query('SET session_replication_role = DEFAULT')
  c.release()
  const res = await fetch(`${http}/notify/cita`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${serviceToken()}` },
    body: JSON.stringify({ negocio_id: 'n1', action: 'created' })
  })
  t.equal(res.status, 200)
  t.match(await res.json(), { stats: { negocio_id: 'n1', total_citas: 1 }, delivered: 1, bus: 'sent' })
  t.equal(follower.app.citasLive.live.forwards, forwards + 1, 'the leader answered')
  t.equal(follower.app.citasLive.stats.queryCount, before, 'the follower queried nothing')
  await waitFor(() => clients.every(c => total(c) === 1))
  t.same(clients.map(total), [1, 1, 1], 'every instance\'s subscriber has the figures')
})

t.test('a follower whose leader does not answer computes its notify itself', async (t) => {
  const db = await testDatabase(t)
  await addNegocio(db.pool, 'n1')
  // The leader reaches the database through a proxy that the test freezes: it hears nothing more.
  const proxy = await tcpProxyFor(db.url)
  t.teardown(() => proxy.close())
  const leader = await build(t, { database: db, db: { connectionString: proxy.through(db.url) }, live: { busSecret, instanceId: 'a' } })
  await leading(leader.app)
  const follower = await build(t, { database: db, live: { busSecret, instanceId: 'b' } })
  await waitFor(() => follower.app.citasLive.live.status().changeCapture.role === 'follower')
  proxy.hold()
  await addCita(db.pool, 'n1', new Date())
  const started = Date.now()
  const res = await follower.app.inject({ method: 'POST', url: '/notify/cita', headers: { authorization: `Bearer ${serviceToken()}` }, payload: { negocio_id: 'n1', action: 'created' } })
  t.equal(res.statusCode, 200)
  t.match(res.json(), { stats: { total_citas: 1 } }, 'figures computed after the notify arrived')
  t.ok(Date.now() - started >= 1000, 'after waiting out the leader')
  t.equal(follower.app.citasLive.live.forwards, 0)
  proxy.release()
})

t.test('a process full of clients refuses more with 503 and Retry-After, and serves the ones it has', async (t) => {
  const { app, db } = await build(t, { limits: { maxConnections: 2 }, metrics: { token: 'metrics-token-0123456789' } })
  await addNegocio(db.pool, 'n1')
  const { ws, http } = await listen(app)
  const url = `${ws}/ws?token=${sign({ negocio_id: 'n1' })}`
  const a = await Client.open(url, t)
  const b = await Client.open(url, t)
  await a.subscribe('n1')
  await b.subscribe('n1')

  const refused = await new Promise<{ status: number, retryAfter: string | undefined, body: string }>((resolve, reject) => {
    const c = new Client(url)
    c.ws.once('open', () => reject(new Error('a third connection was accepted')))
    c.ws.once('unexpected-response', (_req, res) => {
      let body = ''
      res.on('data', (d: Buffer) => { body += d.toString() })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'], body }))
    })
  })
  t.equal(refused.status, 503)
  t.match(refused.retryAfter, /^([5-9]|1[0-5])$/, 'Retry-After: 5 to 15 seconds')
  t.match(JSON.parse(refused.body), { statusCode: 503, code: 'unavailable', message: 'this server is full: retry later' })
  const sse = await fetch(`${http}/sse?channels=estadisticas:n1`, { headers: { authorization: `Bearer ${sign({ negocio_id: 'n1' })}` } })
  t.equal(sse.status, 503, 'an event stream too')
  t.ok(sse.headers.get('retry-after'))
  await sse.body?.cancel()

  await addCita(db.pool, 'n1', new Date())
  await waitFor(() => total(a) === 1 && total(b) === 1)
  const metrics = await (await fetch(`${http}/metrics`, { headers: { authorization: 'Bearer metrics-token-0123456789' } })).text()
  t.match(metrics, /citas_live_connections_refused_total\{reason="capacity"\} 2/)

  a.ws.close()
  await a.closed
  await waitFor(() => app.citasLive.hub.connectionCount === 1)
  t.equal((await handshake(url)).status, 101, 'room again once a client left')
})

t.test('the capacity left by the open-files limit', async (t) => {
  const { connectionCapacity, FILES_RESERVED } = await import('../../services/http/limits.js')
  t.equal(connectionCapacity(0, { limit: 20_000, open: 40 }), 20_000 - 40 - FILES_RESERVED)
  t.equal(connectionCapacity(100, { limit: 20_000, open: 40 }), 100, 'MAX_CONNECTIONS below it')
  t.equal(connectionCapacity(50_000, { limit: 20_000, open: 40 }), 20_000 - 40 - FILES_RESERVED, 'never above it')
  t.equal(connectionCapacity(0, undefined), Number.POSITIVE_INFINITY, 'no limit known, none set')
  t.equal(connectionCapacity(0, { limit: 100, open: 40 }), 0)
})
