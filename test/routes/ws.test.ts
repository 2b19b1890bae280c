import t from 'tap'
import { addCita, Client, handshake, logged, SECRET, serve, sign, waitFor } from '../helper.js'
import { forcePublic, resetGuards } from '../../services/adapters/guard.js'
import type { WsConnection } from '../../services/transports/websocket.js'

t.test('handshake: a missing or bad token gets 401 with a JSON body and no upgrade', async (t) => {
  const { url } = await serve(t)
  const none = Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url') + '.' +
    Buffer.from('{"negocio_id":"n1"}').toString('base64url') + '.'
  const cases: Array<[string, string, RegExp]> = [
    ['missing', url, /missing token/],
    ['empty', `${url}?token=`, /missing token/],
    ['malformed', `${url}?token=abc.def`, /malformed token/],
    ['bad signature', `${url}?token=${sign({ negocio_id: 'n1' }, { secret: 'another-secret-of-some-length' })}`, /invalid token signature/],
    ['expired', `${url}?token=${sign({ negocio_id: 'n1' }, { expiresIn: -1000 })}`, /token expired/],
    ['alg none', `${url}?token=${none}`, /HS256 only/],
    ['HS512', `${url}?token=${sign({ negocio_id: 'n1' }, { algorithm: 'HS512' })}`, /HS256 only/]
  ]
  for (const [name, u, message] of cases) {
    const res = await handshake(u)
    t.equal(res.status, 401, name)
    t.match(res.body, { statusCode: 401, code: 'unauthorized', error: 'Unauthorized', message }, name)
  }
})

t.test('the token is accepted from the query, the Authorization header and Sec-WebSocket-Protocol', async (t) => {
  const { url } = await serve(t)
  const token = sign({ negocio_id: 'n1' })

  const byQuery = await Client.open(`${url}?token=${token}`, t)
  t.same(await byQuery.request({ type: 'ping' }), { type: 'pong' })

  const byHeader = await Client.open(url, t, { headers: { authorization: `Bearer ${token}` } })
  t.same(await byHeader.request({ type: 'ping' }), { type: 'pong' })

  const byProtocol = await Client.open(url, t, {}, ['bearer', token])
  t.equal(byProtocol.ws.protocol, 'bearer', 'the server selects the bearer subprotocol')
  t.same(await byProtocol.request({ type: 'ping' }), { type: 'pong' })

  const badProtocol = await handshake(url, {}, ['bearer', sign({ negocio_id: 'n1' }, { secret: 'wrong-secret-wrong-secret' })])
  t.equal(badProtocol.status, 401)
})

t.test('subscribe answers subscribed, then the current stats equal to the database', async (t) => {
  const { url, db } = await serve(t)
  const today = new Date()
  await addCita(db.pool, 'n1', today, 'atendida')
  await addCita(db.pool, 'n1', new Date(today.getTime() - 3 * 86400_000), 'cancelada')
  await addCita(db.pool, 'n1', new Date(today.getTime() + 3 * 86400_000), 'pendiente')
  await addCita(db.pool, 'n2', today, 'pendiente')

  const c = await Client.open(`${url}?token=${sign({ negocio_id: 'n1' })}`, t)
  t.same(await c.request({ type: 'subscribe', id: 'a1', data: { channel: 'estadisticas:n1' } }),
    { type: 'subscribed', id: 'a1', data: { channel: 'estadisticas:n1' } })
  const stats = await c.next()
  t.match(stats, {
    type: 'stats',
    data: { negocio_id: 'n1', citas_hoy: 1, total_citas: 3, citas_completadas: 1, citas_canceladas: 1 }
  })
  t.same(Object.keys(stats.data), ['negocio_id', 'citas_hoy', 'total_citas', 'citas_completadas', 'citas_canceladas', 'timestamp'],
    'exactly the seed\'s fields')
  t.ok(Number.isInteger(stats.data.timestamp) && Math.abs(stats.data.timestamp - Date.now() / 1000) < 60, 'timestamp in unix seconds')

  t.same(await c.request({ type: 'unsubscribe', id: 2, data: { channel: 'estadisticas:n1' } }),
    { type: 'unsubscribed', id: 2, data: { channel: 'estadisticas:n1' } })
  t.same(await c.request({ type: 'ping', id: 'p' }), { type: 'pong', id: 'p' })
})

t.test('errors: bad_request, invalid_channel, forbidden, not_found; the connection stays open', async (t) => {
  const { url } = await serve(t)
  const c = await Client.open(`${url}?token=${sign({ negocios: ['n1', 'ghost'] })}`, t)
  const error = async (msg: unknown) => await c.request(msg)

  t.match(await error('not json'), { type: 'error', data: { code: 'bad_request', message: /not valid JSON/ } })
  t.match(await error({ type: 'subscribe' }), { type: 'error', data: { code: 'bad_request' } })
  t.match(await error({ type: 'shout', id: 9 }), { type: 'error', id: 9, data: { code: 'bad_request', message: /unknown message type/ } })
  t.match(await error({ type: 'subscribe', id: 'x', data: { channel: 'stats:n1' } }),
    { type: 'error', id: 'x', data: { code: 'invalid_channel' } })
  t.match(await error({ type: 'subscribe', data: { channel: 'estadisticas:n2' } }),
    { type: 'error', data: { code: 'forbidden', message: /does not allow estadisticas:n2/ } })

  c.ws.send(Buffer.from([1, 2, 3]), { binary: true })
  t.match(await c.next(), { type: 'error', data: { code: 'bad_request', message: /binary/ } })

  // Allowed by the token but absent from the database.
  t.match(await error({ type: 'subscribe', id: 'g', data: { channel: 'estadisticas:ghost' } }), { type: 'subscribed' })
  t.match(await c.next(), { type: 'error', id: 'g', data: { code: 'not_found', message: /ghost does not exist/ } })

  t.same(await c.request({ type: 'ping' }), { type: 'pong' }, 'still open after every error')
  t.match(await c.subscribe('n1'), { type: 'stats', data: { negocio_id: 'n1' } })
})

t.test('claims: negocio_id, negocios, admin role, and renamed claims', async (t) => {
  const { url } = await serve(t, { auth: { secret: SECRET, adminRole: 'admin', claims: { negocioId: 'biz', negocios: 'bizs', role: 'rol' } } })
  const renamed = await Client.open(`${url}?token=${sign({ biz: 'n1' })}`, t)
  t.match(await renamed.subscribe('n1'), { type: 'stats' })
  t.match(await renamed.request({ type: 'subscribe', data: { channel: 'estadisticas:n2' } }), { data: { code: 'forbidden' } })

  const defaultNames = await Client.open(`${url}?token=${sign({ negocio_id: 'n1', negocios: ['n2'] })}`, t)
  t.match(await defaultNames.request({ type: 'subscribe', data: { channel: 'estadisticas:n1' } }), { data: { code: 'forbidden' } },
    'the default claim names do not apply once renamed')

  const list = await Client.open(`${url}?token=${sign({ bizs: ['n1', 'n2', 42] })}`, t)
  t.match(await list.subscribe('n2'), { type: 'stats', data: { negocio_id: 'n2' } })

  const admin = await Client.open(`${url}?token=${sign({ rol: 'admin' })}`, t)
  t.match(await admin.subscribe('n2'), { type: 'stats' })
  const notAdmin = await Client.open(`${url}?token=${sign({ role: 'admin' })}`, t)
  t.match(await notAdmin.request({ type: 'subscribe', data: { channel: 'estadisticas:n2' } }), { data: { code: 'forbidden' } })
})

t.test('no admin wildcard unless JWT_ADMIN_ROLE is set', async (t) => {
  const { url } = await serve(t)
  const c = await Client.open(`${url}?token=${sign({ role: 'admin' })}`, t)
  t.match(await c.request({ type: 'subscribe', data: { channel: 'estadisticas:n1' } }), { data: { code: 'forbidden' } })
})

t.test('a closed socket leaves no trace in the hub', async (t) => {
  const { url, app } = await serve(t)
  const a = await Client.open(`${url}?token=${sign({ negocios: ['n1', 'n2'] })}`, t)
  const b = await Client.open(`${url}?token=${sign({ negocio_id: 'n1' })}`, t)
  await a.subscribe('n1')
  await a.subscribe('n2')
  await b.subscribe('n1')
  t.equal(app.citasLive.hub.connectionCount, 2)
  t.equal(app.citasLive.hub.channelCount, 2)
  t.equal(app.citasLive.hub.subscriberCount('estadisticas:n1'), 2)

  a.ws.close()
  await a.closed
  await waitFor(() => app.citasLive.hub.connectionCount === 1)
  t.equal(app.citasLive.hub.channelCount, 1, 'estadisticas:n2 is gone with its last subscriber')
  t.equal(app.citasLive.hub.subscriberCount('estadisticas:n1'), 1)

  await b.request({ type: 'unsubscribe', data: { channel: 'estadisticas:n1' } })
  t.equal(app.citasLive.hub.channelCount, 0)
  b.ws.terminate()
  await waitFor(() => app.citasLive.hub.connectionCount === 0)
  t.same([...app.citasLive.hub.channelNames()], [])
})

t.test('heartbeat: a peer that stops answering pings is terminated', async (t) => {
  const { url, app } = await serve(t, { hub: { heartbeatMs: 100 } })
  // autoPong: false makes this client deaf to pings, like a peer whose network vanished.
  const deaf = await Client.open(`${url}?token=${sign({ negocio_id: 'n1' })}`, t, { autoPong: false })
  const alive = await Client.open(`${url}?token=${sign({ negocio_id: 'n1' })}`, t)
  const { code } = await deaf.closed
  t.equal(code, 1006, 'terminated without a close frame')
  t.equal(alive.ws.readyState, alive.ws.OPEN, 'a peer that answers stays')
  await waitFor(() => app.citasLive.hub.connectionCount === 1)
})

t.test('a frame over maxPayload closes the socket with 1009', async (t) => {
  const { url } = await serve(t)
  const c = await Client.open(`${url}?token=${sign({ negocio_id: 'n1' })}`, t)
  c.send(JSON.stringify({ type: 'ping', pad: 'x'.repeat(5000) }))
  const { code } = await c.closed
  t.equal(code, 1009)
})

t.test('a plain HTTP GET on /ws is refused', async (t) => {
  const { app } = await serve(t)
  const res = await app.inject({ url: `/ws?token=${sign({ negocio_id: 'n1' })}` })
  t.equal(res.statusCode, 404)
  const anon = await app.inject({ url: '/ws' })
  t.equal(anon.statusCode, 401)
})

t.test('an open connection keeps nothing of its upgrade request, and still answers and closes cleanly', async (t) => {
  const { url, app } = await serve(t)
  const c = await Client.open(`${url}?token=${sign({ negocio_id: 'n1' })}`, t)
  t.same(await c.request({ type: 'ping', id: 1 }), { type: 'pong', id: 1 })
  const [conn] = [...app.citasLive.hub.connections]
  if (conn === undefined) throw new Error('no connection in the hub')
  const socket = (conn as WsConnection).socket as unknown as { listenerCount: (e: string) => number, _socket: { _httpMessage: unknown } }
  t.equal(socket.listenerCount('error'), 1, 'one shared error listener, not one that closes over the request')
  t.equal(socket._socket._httpMessage, null, 'the TCP socket no longer holds the upgrade response')
  c.ws.close()
  await waitFor(() => app.citasLive.hub.connectionCount === 0)
})

t.test('with the adapters on their public paths (a dependency of another shape), /ws works the same, and says so once', async (t) => {
  resetGuards()
  t.teardown(resetGuards)
  forcePublic(['ws-send', 'upgrade-release'])
  const { url, app, db } = await serve(t)
  await addCita(db.pool, 'n1', new Date(), 'atendida')
  const clients = [await Client.open(`${url}?token=${sign({ negocio_id: 'n1' })}`, t), await Client.open(`${url}?token=${sign({ negocio_id: 'n1' })}`, t)]
  for (const c of clients) t.match(await c.subscribe('n1'), { type: 'stats', data: { total_citas: 1 } })
  const [conn] = [...app.citasLive.hub.connections]
  if (conn === undefined) throw new Error('no connection in the hub')
  const socket = (conn as WsConnection).socket as unknown as { _socket: { _httpMessage: unknown } }
  t.not(socket._socket._httpMessage, null, 'the upgrade response is left in place')
  await addCita(db.pool, 'n1', new Date(), 'cancelada')
  app.citasLive.hub.publish('estadisticas:n1', JSON.stringify({ type: 'stats', data: { total_citas: 2 } }))
  for (const c of clients) t.match(await c.next(), { type: 'stats', data: { total_citas: 2 } })
  t.equal(logged(/ws-send: .*public API/).length, 1, 'ws-send: one line')
  t.equal(logged(/upgrade-release: .*public API/).length, 1, 'upgrade-release: one line')
  // An error on a socket still ends it, through @fastify/websocket's errorHandler.
  ;(conn as WsConnection).socket.emit('error', new Error('boom'))
  await waitFor(() => app.citasLive.hub.connectionCount === 1)
})
