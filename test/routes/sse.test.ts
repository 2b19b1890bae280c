import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { addCita, addNegocio, build, Client, listen, serviceToken, sign, SseClient, testDatabase, waitFor, type SseEvent } from '../helper.js'
import { NO_REDIS, redisUrl } from '../fixtures/own-servers.js'

async function setup (t: Test, opts: Parameters<typeof build>[1] = {}) {
  const built = await build(t, { live: { changeCapture: false }, ...opts })
  const { http, ws } = await listen(built.app)
  for (const id of ['n1', 'n2', 'n3']) await addNegocio(built.db.pool, id)
  const notify = async (negocio: string) => {
    const res = await fetch(`${http}/notify/cita`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${serviceToken()}` },
      body: JSON.stringify({ negocio_id: negocio, action: 'created' })
    })
    t.equal(res.status, 200, `notify ${negocio}`)
  }
  return { ...built, http, ws, sse: `${http}/sse`, notify }
}

const bearer = (claims: Record<string, unknown>) => ({ authorization: `Bearer ${sign(claims)}` })

/** The next stats event of `negocio`, others skipped. */
async function statsOf (c: SseClient, negocio: string, pred: (data: any) => boolean = () => true): Promise<SseEvent> {
  for (;;) {
    const e = await c.next()
    if (e.event === 'stats' && e.data.negocio_id === negocio && pred(e.data)) return e
  }
}

t.test('refusals before anything is streamed: 401, 403, 400, with the /ws error bodies', async (t) => {
  const { sse } = await setup(t, { limits: { allowedOrigins: ['https://app.example'] } })
  const refused = async (url: string, headers: Record<string, string>, status: number, code: string, message: RegExp, channel?: string) => {
    const c = await SseClient.open(url, t, headers)
    t.equal(c.status, status, `${url}: ${status}`)
    t.match(c.body, { statusCode: status, code, message }, `${url}: ${code}`)
    t.equal(c.body.channel, channel, channel === undefined ? 'no channel named' : `names ${channel}`)
    t.notMatch(String(c.headers['content-type']), /event-stream/, 'nothing streamed')
  }
  const n1 = bearer({ sub: 'u1', negocio_id: 'n1' })
  await refused(`${sse}?channels=estadisticas:n1`, {}, 401, 'unauthorized', /token/)
  await refused(`${sse}?channels=estadisticas:n1`, { authorization: 'Bearer nope' }, 401, 'unauthorized', /./)
  await refused(`${sse}?channels=estadisticas:n1&token=${sign({ negocio_id: 'n1', exp: 1 })}`, {}, 401, 'unauthorized', /expired/)
  await refused(`${sse}?channels=estadisticas:n1`, { ...n1, origin: 'https://evil.example' }, 403, 'forbidden', /origin/)
  await refused(`${sse}?channels=estadisticas:n2`, n1, 403, 'forbidden', /estadisticas:n2/, 'estadisticas:n2')
  await refused(`${sse}?channels=estadisticas:n1,estadisticas:n2`, n1, 403, 'forbidden', /estadisticas:n2/, 'estadisticas:n2')
  await refused(`${sse}`, n1, 400, 'bad_request', /channels/)
  await refused(`${sse}?channels=,`, n1, 400, 'bad_request', /channels/)
  await refused(`${sse}?channels=estadisticas:bad!id`, n1, 400, 'invalid_channel', /estadisticas:bad!id/, 'estadisticas:bad!id')
  await refused(`${sse}?channels=chat:n1`, n1, 400, 'invalid_channel', /chat:n1/, 'chat:n1')
  const many = Array.from({ length: 101 }, (_, i) => `estadisticas:x${i}`).join(',')
  await refused(`${sse}?channels=${many}`, bearer({ role: 'admin' }), 400, 'limit', /at most 100/)
  // HEAD would be a stream without a body that never ends: there is none.
  t.equal((await fetch(`${sse}?channels=estadisticas:n1`, { method: 'HEAD', headers: n1 })).status, 404)
  // A page of an allowed origin can read why it was refused.
  const c = await SseClient.open(`${sse}?channels=estadisticas:n2`, t, { ...n1, origin: 'https://app.example' })
  t.equal(c.status, 403)
  t.equal(c.headers['access-control-allow-origin'], 'https://app.example')
})

t.test('a stream: current stats of each channel at once, then every change, with the exact data of the WebSocket message', async (t) => {
  const { sse, ws, db, notify } = await setup(t, { limits: { allowedOrigins: ['https://app.example'] } })
  await addCita(db.pool, 'n1', new Date())
  await addCita(db.pool, 'n2', new Date(), 'cancelada')
  const c = await SseClient.open(`${sse}?channels=estadisticas:n1,estadisticas:n2,estadisticas:n1`, t,
    { ...bearer({ sub: 'u1', negocios: ['n1', 'n2'] }), origin: 'https://app.example' })
  t.equal(c.status, 200)
  t.match(c.headers['content-type'], /^text\/event-stream/)
  t.match(c.headers['cache-control'], /no-cache/)
  t.equal(c.headers['access-control-allow-origin'], 'https://app.example')
  const first = [await c.next(), await c.next()]
  t.same(first.map(e => e.event), ['stats', 'stats'])
  t.same(first.map(e => e.data.negocio_id).sort(), ['n1', 'n2'], 'each channel once, the duplicate ignored')
  t.match(first.find(e => e.data.negocio_id === 'n2')?.data, { total_citas: 1, citas_canceladas: 1 })
  t.equal(c.retry, 2000, 'EventSource is told its reconnection delay')
  t.ok(first.every(e => typeof e.id === 'string' && e.id.length > 0), 'every stats event has an id')

  // The same change reaches a WebSocket subscriber and the stream with the same data object.
  const w = await Client.open(`${ws}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
  await w.subscribe('n1')
  await addCita(db.pool, 'n1', new Date(), 'atendida')
  await notify('n1')
  const pushed = await statsOf(c, 'n1', d => d.total_citas === 2)
  const message = await w.nextMatching(m => m.type === 'stats')
  t.equal(pushed.raw, JSON.stringify(message.data), 'data: is exactly the data object of the WebSocket stats message')
  t.match(pushed.data, { negocio_id: 'n1', total_citas: 2, citas_completadas: 1 })
  t.not(pushed.id, first[0]?.id, 'a new id')
  // An unchanged notify pushes nothing.
  await notify('n1')
  t.ok(await c.silentFor(300), 'no event for unchanged figures')
})

t.test('the token in the query string works (EventSource cannot send headers); the per-user cap counts WebSockets and streams together', async (t) => {
  const { sse, ws } = await setup(t, { limits: { maxConnectionsPerUser: 2 } })
  const token = sign({ sub: 'u1', negocio_id: 'n1' })
  const s1 = await SseClient.open(`${sse}?channels=estadisticas:n1&token=${token}`, t)
  t.equal(s1.status, 200)
  t.equal((await s1.next()).event, 'stats')
  const w1 = await Client.open(`${ws}/ws?token=${token}`, t)
  const s2 = await SseClient.open(`${sse}?channels=estadisticas:n1&token=${token}`, t)
  t.equal(s2.status, 429)
  t.match(s2.body, { statusCode: 429, code: 'limit', message: /too many connections for this user/ })
  await t.rejects(Client.open(`${ws}/ws?token=${token}`, t), new Error('HTTP 429'), 'and a WebSocket over the cap is refused too')
  // Another user is not affected; a closed stream frees its place.
  t.equal((await SseClient.open(`${sse}?channels=estadisticas:n1`, t, bearer({ sub: 'u2', negocio_id: 'n1' }))).status, 200)
  s1.close()
  await waitFor(async () => (await SseClient.open(`${sse}?channels=estadisticas:n1&token=${token}`, t)).status === 200)
  w1.ws.close()
})

t.test('resume: Last-Event-ID skips channels whose figures are unchanged, also with another channel set', async (t) => {
  const { sse, db, notify } = await setup(t)
  const headers = bearer({ sub: 'u1', negocios: ['n1', 'n2', 'n3'] })
  const url = `${sse}?channels=estadisticas:n1,estadisticas:n2`
  const a = await SseClient.open(url, t, headers)
  await waitFor(() => a.events.length === 2)
  const lastId = a.lastEventId
  a.close()
  // While away, n2 changes; n1 does not.
  await addCita(db.pool, 'n2', new Date())
  await notify('n2')
  const b = await SseClient.open(url, t, { ...headers, 'last-event-id': lastId })
  const e = await b.next()
  t.match(e, { event: 'stats', data: { negocio_id: 'n2', total_citas: 1 } }, 'the changed channel is sent')
  t.ok(await b.silentFor(300), 'the unchanged one is not')
  // A change of n1 later on is sent, and its id covers both channels.
  await addCita(db.pool, 'n1', new Date())
  await notify('n1')
  const later = await statsOf(b, 'n1', d => d.total_citas === 1)
  t.equal(later.id?.split('.').length, 2, 'the id names both channels')

  // Another channel set with the last id: only the channels it does not cover (or that changed) are sent.
  const c = await SseClient.open(`${sse}?channels=estadisticas:n3,estadisticas:n1,estadisticas:n2`, t, { ...headers, 'last-event-id': b.lastEventId })
  t.match(await c.next(), { event: 'stats', data: { negocio_id: 'n3' } })
  t.ok(await c.silentFor(300), 'n1 and n2 unchanged since that id')
  // A made-up id is ignored: everything is sent.
  const d = await SseClient.open(url, t, { ...headers, 'last-event-id': 'garbage' })
  t.same([(await d.next()).data.negocio_id, (await d.next()).data.negocio_id].sort(), ['n1', 'n2'])
})

t.test('heartbeat comments keep an idle stream alive', async (t) => {
  const { sse } = await setup(t, { sseHeartbeatMs: 100 })
  const c = await SseClient.open(`${sse}?channels=estadisticas:n1`, t, bearer({ negocio_id: 'n1' }))
  await c.next()
  await waitFor(() => c.comments >= 3)
  t.pass(`${c.comments} heartbeats`)
})

t.test('token_expiring before exp, then a close event and the end of the stream at exp', async (t) => {
  const { sse } = await setup(t, { expiry: { warningMs: 1500, sweepMs: 50 } })
  const exp = Math.ceil(Date.now() / 1000) + 3
  const c = await SseClient.open(`${sse}?channels=estadisticas:n1`, t, bearer({ sub: 'u1', negocio_id: 'n1', exp }))
  t.equal((await c.next()).event, 'stats')
  await c.ended
  t.ok(Date.now() >= exp * 1000, 'not before exp')
  t.same(c.events.slice(1).map(e => [e.event, e.data]), [
    ['token_expiring', { expires_at: exp }],
    ['close', { code: 4001, reason: 'token expired' }]
  ])
})

t.test('a deleted negocio ends its channel with an error event; the stream goes on', async (t) => {
  const { sse, db, notify } = await setup(t)
  const c = await SseClient.open(`${sse}?channels=estadisticas:n1,estadisticas:gone`, t, bearer({ negocios: ['n1', 'gone'] }))
  const events = [await c.next(), await c.next()]
  t.match(events.find(e => e.event === 'error')?.data, { code: 'not_found', channel: 'estadisticas:gone' })
  t.match(events.find(e => e.event === 'stats')?.data, { negocio_id: 'n1' })
  await addCita(db.pool, 'n1', new Date())
  await notify('n1')
  t.match(await statsOf(c, 'n1', d => d.total_citas === 1), { event: 'stats' })
})

/** A stats message of n1 padded to 64 KiB, so the kernel's socket buffers fill quickly and the hub's bound is what holds. */
const big = (n: number) => JSON.stringify({ type: 'stats', data: { negocio_id: 'n1', citas_hoy: n, total_citas: n, citas_completadas: 0, citas_canceladas: 0, timestamp: n, pad: 'x'.repeat(64 * 1024) } })

/** A server with a 64 KiB bound, and a stream of n1 that has had its first event and stopped reading. */
async function pausedStream (t: Test, stallTimeoutMs: number) {
  const built = await setup(t, { hub: { maxBufferedBytes: 64 * 1024, stallTimeoutMs } })
  const c = await SseClient.open(`${built.sse}?channels=estadisticas:n1`, t, bearer({ negocio_id: 'n1' }))
  await c.next()
  c.response.pause()
  return { app: built.app, c }
}

t.test('a slow reader gets only the newest stats per channel, and one stalled past the deadline is ended', async (t) => {
  const { app, c } = await pausedStream(t, 60_000)
  const N = 400
  let maxBuffered = 0
  for (let i = 1; i <= N; i++) {
    app.citasLive.hub.publish('estadisticas:n1', big(i))
    for (const conn of app.citasLive.hub.connections) maxBuffered = Math.max(maxBuffered, conn.bufferedAmount)
    if (i % 20 === 0) await new Promise(resolve => setImmediate(resolve))
  }
  t.ok(maxBuffered <= 64 * 1024 + 2 * (64 * 1024 + 400), `bufferedAmount peaked at ${maxBuffered} bytes`)
  t.ok(app.citasLive.hub.counters.dropped.superseded > 0, `stale stats were dropped (${app.citasLive.hub.counters.dropped.superseded})`)
  c.response.resume()
  await waitFor(() => c.events.at(-1)?.data.citas_hoy === N, 20_000)
  const seq = c.events.slice(1).map(e => e.data.citas_hoy as number)
  t.ok(seq.length < N, `${seq.length} of ${N} events: older ones dropped, not queued`)
  t.same(seq, [...seq].sort((a, b) => a - b), 'in order, the newest last')
})

t.test('a stream that stops reading is closed after the stall timeout', async (t) => {
  const { app } = await pausedStream(t, 300)
  for (let i = 0; i < 200 && app.citasLive.hub.slowCount === 0; i++) {
    app.citasLive.hub.publish('estadisticas:n1', big(i))
    await new Promise(resolve => setImmediate(resolve))
  }
  await waitFor(() => app.citasLive.hub.stalledCount === 1)
  await waitFor(() => app.citasLive.hub.connectionCount === 0, 15_000)
  t.equal([...app.citasLive.hub.connections].filter(c => c.transport === 'sse').length, 0, 'the hub forgot it')
})

t.test('closing the server (SIGTERM) ends every stream with a close event 1012 and a spread retry', async (t) => {
  const { app, sse } = await setup(t, { sseRetryMs: 1000 })
  const streams = await Promise.all([1, 2, 3].map(async () => await SseClient.open(`${sse}?channels=estadisticas:n1`, t, bearer({ negocio_id: 'n1' }))))
  for (const s of streams) await s.next()
  await app.close()
  for (const s of streams) {
    await s.ended
    t.same(s.events.at(-1), { event: 'close', id: s.events[0]?.id, data: { code: 1012, reason: 'server restarting' }, raw: '{"code":1012,"reason":"server restarting"}' })
    t.ok((s.retry as number) >= 1000 && (s.retry as number) <= 5000, `retry ${s.retry} ms, spread over 1-5 s`)
  }
})

t.test('metrics count SSE connections apart', async (t) => {
  const { app, sse, ws } = await setup(t, { metrics: { token: 'metrics-token-0123456789' } })
  const s = await SseClient.open(`${sse}?channels=estadisticas:n1`, t, bearer({ negocio_id: 'n1' }))
  await s.next()
  const w = await Client.open(`${ws}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
  await w.subscribe('n1')
  const res = await app.inject({ url: '/metrics', headers: { authorization: 'Bearer metrics-token-0123456789' } })
  t.match(res.body, /citas_live_connections\{transport="sse"\} 1\n/)
  t.match(res.body, /citas_live_connections\{transport="websocket"\} 1\n/)
  t.match(res.body, /citas_live_subscriptions 2\n/)
})

t.test('CORS preflight for a cross-origin stream that sends Authorization', async (t) => {
  const { app } = await setup(t, { limits: { allowedOrigins: ['https://app.example'] } })
  const ok = await app.inject({ method: 'OPTIONS', url: '/sse', headers: { origin: 'https://app.example', 'access-control-request-method': 'GET' } })
  t.equal(ok.statusCode, 204)
  t.equal(ok.headers['access-control-allow-origin'], 'https://app.example')
  t.match(ok.headers['access-control-allow-headers'], /authorization/)
  t.match(ok.headers['access-control-allow-headers'], /last-event-id/)
  const evil = await app.inject({ method: 'OPTIONS', url: '/sse', headers: { origin: 'https://evil.example' } })
  t.equal(evil.statusCode, 403)
})

for (const bus of ['postgres', 'redis'] as const) {
  t.test(`two instances on the ${bus} bus: a notify on one reaches the streams of the other`, { skip: bus === 'redis' && NO_REDIS }, async (t) => {
    const db = await testDatabase(t)
    await addNegocio(db.pool, 'n1')
    const busSecret = randomBytes(24).toString('hex')
    const live = { changeCapture: false, busSecret, bus, ...(bus === 'redis' ? { redisUrl: await redisUrl(t) } : {}) }
    const a = await build(t, { database: db, live: { ...live, instanceId: 'a' } })
    const b = await build(t, { database: db, live: { ...live, instanceId: 'b' } })
    const { http } = await listen(a.app)
    const other = await listen(b.app)
    const s = await SseClient.open(`${other.http}/sse?channels=estadisticas:n1`, t, bearer({ negocio_id: 'n1' }))
    t.match(await s.next(), { event: 'stats', data: { total_citas: 0 } })
    // The redis bus subscribes in the background: notify until the stream hears one.
    await addCita(db.pool, 'n1', new Date())
    await waitFor(async () => {
      const res = await fetch(`${http}/notify/cita`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${serviceToken()}` },
        body: JSON.stringify({ negocio_id: 'n1', action: 'created' })
      })
      const reply = await res.json() as { bus: string }
      return reply.bus === 'sent' && s.events.some(e => e.data.total_citas === 1)
    })
    t.match(s.events.at(-1), { event: 'stats', data: { negocio_id: 'n1', total_citas: 1 } })
  })
}

t.test('under a prefix, embedded: /live/sse', async (t) => {
  const { app, db } = await build(t, { prefix: '/live', live: { changeCapture: false } })
  const { http } = await listen(app)
  await addNegocio(db.pool, 'n1')
  const c = await SseClient.open(`${http}/live/sse?channels=estadisticas:n1`, t, bearer({ negocio_id: 'n1' }))
  t.equal(c.status, 200)
  t.match(await c.next(), { event: 'stats', data: { negocio_id: 'n1' } })
})

t.test('a database outage: a stream opened meanwhile gets unavailable per channel, stays open, and catches up when it is back', async (t) => {
  const { db, sse } = await setup(t, { dbMonitor: { probeIntervalMs: 50 } })
  const before = await SseClient.open(`${sse}?channels=estadisticas:n1`, t, bearer({ negocio_id: 'n1' }))
  t.match(await before.next(), { event: 'stats', data: { total_citas: 0 } })
  await addCita(db.pool, 'n1', new Date())
  await addCita(db.pool, 'n2', new Date())
  await db.setDown(true)
  const during = await SseClient.open(`${sse}?channels=estadisticas:n1,estadisticas:n2`, t, bearer({ negocios: ['n1', 'n2'] }))
  t.equal(during.status, 200, 'opened while the database is down')
  const first = [await during.next(), await during.next()]
  t.match(first.find(e => e.event === 'stats')?.data, { negocio_id: 'n1', total_citas: 0 }, 'the cached snapshot of n1')
  t.match(first.find(e => e.event === 'error')?.data, { code: 'unavailable', channel: 'estadisticas:n2' }, 'n2 has none yet')
  await db.setDown(false)
  // In whichever order the resync pushes them.
  const has = (c: SseClient, negocio: string) => c.events.some(e => e.event === 'stats' && e.data.negocio_id === negocio && e.data.total_citas === 1)
  await waitFor(() => has(during, 'n2') && has(during, 'n1') && has(before, 'n1'))
  t.pass('n2 once the database is back, and the change to n1 made during the outage, on both streams')
})
