import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { connect, type CitasLiveError, type ConnectOptions, type StateChange, type Stats } from '../../client/index.js'
import { sseServer, type SseServer } from '../fixtures/sse-server.js'
import { fakeToken } from './fakes.js'
import { waitFor } from '../helper.js'

// The client's SSE transport over real HTTP (Node's fetch) against a server scripted by the test.

function stats (negocio: string, total: number): Stats {
  return { negocio_id: negocio, citas_hoy: 1, total_citas: total, citas_completadas: 0, citas_canceladas: 0, timestamp: 1 }
}

async function server (t: Test): Promise<SseServer> {
  const srv = await sseServer()
  t.teardown(() => srv.close())
  return srv
}

function open (t: Test, srv: SseServer, opts: Partial<ConnectOptions> = {}) {
  const states: StateChange[] = []
  const errors: CitasLiveError[] = []
  const subscribed: string[] = []
  const messages: string[] = []
  const client = connect({
    url: `${srv.ws}/ws`,
    token: fakeToken({ sub: 'u1', n: 0 }),
    channels: ['n1', 'n2'],
    transport: 'sse',
    backoff: { initial: 20, max: 100, restartWindow: 50 },
    pageEvents: false,
    onState: (s) => states.push(s),
    onError: (e) => errors.push(e),
    ...opts
  })
  client.on('subscribed', (c) => subscribed.push(c))
  client.on('message', (m) => messages.push(m.type))
  t.teardown(() => client.close())
  return { client, states, errors, subscribed, messages, names: () => states.map(s => s.state) }
}

t.test('opens GET /sse beside /ws with the token as Bearer and the channels, and reports stats', async (t) => {
  const srv = await server(t)
  const { client, states, subscribed } = open(t, srv)
  await waitFor(() => client.state === 'connected')
  const stream = srv.streams[0]
  t.equal(stream?.url.pathname, '/sse')
  t.same(stream?.channels, ['estadisticas:n1', 'estadisticas:n2'])
  t.equal(stream?.headers.authorization, `Bearer ${fakeToken({ sub: 'u1', n: 0 })}`)
  t.equal(stream?.url.searchParams.has('token'), false, 'the token stays out of the URL')
  t.equal(stream?.lastEventId, undefined, 'no Last-Event-ID on the first stream')
  t.same(states.map(s => [s.state, s.transport]), [['connecting', 'sse'], ['connected', 'sse']])
  t.equal(client.transport, 'sse')
  t.same(subscribed, ['estadisticas:n1', 'estadisticas:n2'], 'subscribed, as over WebSocket')
  stream?.send('stats', stats('n1', 5), 'v1')
  stream?.send('stats', stats('n2', 7), 'v2')
  await waitFor(() => client.stats.get('n2')?.total_citas === 7)
  t.same(client.stats.get('n1'), stats('n1', 5))
})

t.test('a change of channels opens the stream again with Last-Event-ID, once for several changes, without leaving connected', async (t) => {
  const srv = await server(t)
  const { client, names, subscribed } = open(t, srv)
  await waitFor(() => client.state === 'connected')
  srv.streams[0]?.send('stats', stats('n1', 5), 'v1')
  await waitFor(() => client.stats.has('n1'))
  client.subscribe('n3')
  client.unsubscribe('n2')
  await waitFor(() => srv.streams.length === 2)
  t.same(srv.streams[1]?.channels, ['estadisticas:n1', 'estadisticas:n3'])
  t.equal(srv.streams[1]?.lastEventId, 'v1', 'where the last stream left off: unchanged channels send nothing')
  await waitFor(() => srv.streams[0]?.closed === true)
  t.pass('the old stream is closed')
  t.same(names(), ['connecting', 'connected'], 'no state change for a reopen')
  // n3 is reported subscribed once the new stream's response is in, which may follow the old stream's close.
  await waitFor(() => subscribed.length === 3)
  t.same(subscribed, ['estadisticas:n1', 'estadisticas:n2', 'estadisticas:n3'])
  t.same(client.channels, ['estadisticas:n1', 'estadisticas:n3'])
  client.unsubscribe('n1')
  client.unsubscribe('n3')
  await waitFor(() => srv.streams[1]?.closed === true)
  t.equal(client.state, 'connected', 'no channels: no stream, still connected')
  client.subscribe('n1')
  await waitFor(() => srv.streams.length === 3)
  t.same(srv.streams[2]?.channels, ['estadisticas:n1'])
  await waitFor(() => subscribed.length === 4)
  t.same(subscribed.at(-1), 'estadisticas:n1', 'subscribed again after an unsubscribe')
})

t.test('a stream that ends reconnects after a backoff, with a fresh token from getToken and Last-Event-ID', async (t) => {
  const srv = await server(t)
  let calls = 0
  const { client, names } = open(t, srv, { token: undefined, getToken: () => fakeToken({ sub: 'u1', n: ++calls }) })
  await waitFor(() => client.state === 'connected')
  srv.streams[0]?.send('stats', stats('n1', 5), 'v9')
  await waitFor(() => client.stats.has('n1'))
  srv.streams[0]?.end()
  await waitFor(() => srv.streams.length === 2 && client.state === 'connected')
  t.equal(srv.streams[1]?.lastEventId, 'v9')
  t.equal(srv.streams[1]?.token, fakeToken({ sub: 'u1', n: 2 }), 'getToken() before the reconnect')
  t.same(names(), ['connecting', 'connected', 'reconnecting', 'connected'])
})

t.test('token_expiring: a fresh token from getToken, and the stream opened again where it left off', async (t) => {
  const srv = await server(t)
  let calls = 0
  const { client, names, messages } = open(t, srv, { token: undefined, getToken: () => fakeToken({ sub: 'u1', n: ++calls }) })
  await waitFor(() => client.state === 'connected')
  srv.streams[0]?.send('stats', stats('n1', 5), 'v3')
  srv.streams[0]?.send('token_expiring', { expires_at: 123 })
  await waitFor(() => srv.streams.length === 2)
  t.equal(srv.streams[1]?.token, fakeToken({ sub: 'u1', n: 2 }))
  t.equal(srv.streams[1]?.lastEventId, 'v3')
  t.same(messages, ['token_expiring'])
  t.same(names(), ['connecting', 'connected'])
})

t.test('event: close is handled like the WebSocket close codes', async (t) => {
  await t.test('4001 with getToken: a new token at once', async (t) => {
    const srv = await server(t)
    let calls = 0
    const { client, names } = open(t, srv, { token: undefined, getToken: () => fakeToken({ n: ++calls }) })
    await waitFor(() => client.state === 'connected')
    srv.streams[0]?.send('close', { code: 4001, reason: 'token expired' })
    await waitFor(() => srv.streams.length === 2 && client.state === 'connected')
    t.equal(srv.streams[1]?.token, fakeToken({ n: 2 }))
    t.same(names(), ['connecting', 'connected', 'reconnecting', 'connected'])
  })
  await t.test('4001 without getToken: stopped, unauthorized', async (t) => {
    const srv = await server(t)
    const { client, errors } = open(t, srv)
    await waitFor(() => client.state === 'connected')
    srv.streams[0]?.send('close', { code: 4001, reason: 'token expired' })
    await waitFor(() => client.state === 'disconnected')
    t.match(errors, [{ code: 'unauthorized', message: 'token expired', closeCode: 4001 }])
  })
  await t.test('1012: reconnects soon', async (t) => {
    const srv = await server(t)
    const { client, states } = open(t, srv)
    await waitFor(() => client.state === 'connected')
    srv.streams[0]?.send('close', { code: 1012, reason: 'server restarting' })
    await waitFor(() => srv.streams.length === 2 && client.state === 'connected')
    t.ok((states.find(s => s.state === 'reconnecting')?.delay ?? Infinity) < 50, 'within the restart window')
  })
  await t.test('1009: stops with closed', async (t) => {
    const srv = await server(t)
    const { client, errors } = open(t, srv)
    await waitFor(() => client.state === 'connected')
    srv.streams[0]?.send('close', { code: 1009, reason: 'message too big' })
    await waitFor(() => client.state === 'disconnected')
    t.match(errors, [{ code: 'closed', closeCode: 1009 }])
    t.equal(srv.requests.length, 1)
  })
})

t.test('refusals: the same error codes as the WebSocket handshake', async (t) => {
  await t.test('401: unauthorized with the server\'s reason, no retry without getToken', async (t) => {
    const srv = await server(t)
    srv.decide = () => ({ status: 401, body: { statusCode: 401, code: 'unauthorized', error: 'Unauthorized', message: 'invalid token signature' } })
    const { client, errors, states } = open(t, srv)
    await waitFor(() => client.state === 'disconnected')
    t.match(errors, [{ code: 'unauthorized', message: 'invalid token signature', status: 401 }])
    t.equal(states.at(-1)?.error?.code, 'unauthorized')
    t.equal(srv.requests.length, 1)
  })
  await t.test('403 for a channel: reported with its name and dropped, the others streamed', async (t) => {
    const srv = await server(t)
    // As the server answers it, the refused channel named in `channel`; estadisticas:n2, a prefix of it, stays.
    srv.decide = ({ channels }) => channels.includes('estadisticas:n22')
      ? { status: 403, body: { statusCode: 403, code: 'forbidden', error: 'Forbidden', message: 'your token does not allow estadisticas:n22', channel: 'estadisticas:n22' } }
      : undefined
    const { client, errors } = open(t, srv, { channels: ['n2', 'n1', 'n22'] })
    await waitFor(() => client.state === 'connected')
    t.match(errors, [{ code: 'forbidden', channel: 'estadisticas:n22', status: 403 }])
    t.same(client.channels, ['estadisticas:n2', 'estadisticas:n1'])
    t.same(srv.streams[0]?.channels, ['estadisticas:n2', 'estadisticas:n1'])
  })
  await t.test('403 for the origin: stopped, forbidden', async (t) => {
    const srv = await server(t)
    srv.decide = () => ({ status: 403, body: { statusCode: 403, code: 'forbidden', error: 'Forbidden', message: 'origin not allowed' } })
    const { client, errors } = open(t, srv)
    await waitFor(() => client.state === 'disconnected')
    t.match(errors, [{ code: 'forbidden', message: 'origin not allowed', status: 403 }])
  })
  await t.test('429: reported as limit, and retried with backoff', async (t) => {
    const srv = await server(t)
    srv.decide = () => srv.requests.length <= 2 ? { status: 429, body: { statusCode: 429, code: 'limit', error: 'Too Many Requests', message: 'too many connections for this user' } } : undefined
    const { client, errors, names } = open(t, srv)
    await waitFor(() => client.state === 'connected')
    t.same(errors.map(e => [e.code, e.status]), [['limit', 429], ['limit', 429]])
    t.same(names(), ['connecting', 'reconnecting', 'reconnecting', 'connected'])
  })
  await t.test('a proxy\'s page instead of a stream: backoff', async (t) => {
    const srv = await server(t)
    srv.decide = () => srv.requests.length <= 1 ? { status: 200, body: '<html>login</html>', contentType: 'text/html' } : undefined
    const { client, names } = open(t, srv)
    await waitFor(() => client.state === 'connected')
    t.same(names(), ['connecting', 'reconnecting', 'connected'])
  })
})

t.test('event: error with a channel drops it, as over WebSocket', async (t) => {
  const srv = await server(t)
  const { client, errors } = open(t, srv)
  await waitFor(() => client.state === 'connected')
  srv.streams[0]?.send('stats', stats('n2', 1), 'v1')
  srv.streams[0]?.send('error', { code: 'not_found', message: 'negocio n2 was deleted', channel: 'estadisticas:n2' })
  await waitFor(() => errors.length === 1)
  t.match(errors, [{ code: 'not_found', channel: 'estadisticas:n2' }])
  t.same(client.channels, ['estadisticas:n1'])
  t.notOk(client.stats.has('n2'))
})

t.test('a stream silent for heartbeat interval + timeout is replaced; comments keep it alive', async (t) => {
  const srv = await server(t)
  const { client } = open(t, srv, { heartbeat: { interval: 150, timeout: 150 } })
  await waitFor(() => client.state === 'connected')
  let beats = 0
  const beat = setInterval(() => { srv.streams[0]?.write(': ping\n\n'); beats++ }, 50)
  await waitFor(() => beats >= 12)
  clearInterval(beat)
  t.equal(srv.streams.length, 1, 'kept while comments arrive')
  await waitFor(() => srv.streams.length === 2)
  t.ok(srv.streams[0]?.closed)
})

t.test('tokenIn: query and sseUrl', async (t) => {
  const srv = await server(t)
  const token = fakeToken({ sub: 'u1', n: 0 })
  const { client } = open(t, srv, { tokenIn: 'query', sseUrl: `${srv.http}/live/sse?x=1` })
  await waitFor(() => client.state === 'connected')
  t.equal(srv.streams[0]?.url.pathname, '/live/sse')
  t.equal(srv.streams[0]?.url.searchParams.get('x'), '1')
  t.equal(srv.streams[0]?.url.searchParams.get('token'), token)
  t.equal(srv.streams[0]?.headers.authorization, undefined)
})

t.test('auto: WebSocket upgrades refused while HTTP works: SSE after three attempts', async (t) => {
  const srv = await server(t)
  const { client, states } = open(t, srv, { transport: 'auto', WebSocket })
  await waitFor(() => client.state === 'connected')
  t.equal(client.transport, 'sse')
  t.equal(srv.upgrades, 3)
  t.equal(srv.probes, 3, 'each failure checked plain HTTP')
  t.same(states.map(s => `${s.state}/${s.transport}`), [
    'connecting/websocket', 'reconnecting/websocket', 'reconnecting/websocket', 'reconnecting/sse', 'connected/sse'
  ])
  srv.streams[0]?.send('stats', stats('n1', 3), 'v1')
  await waitFor(() => client.stats.has('n1'))
})

t.test('auto: a server that is down is not a reason to switch', async (t) => {
  const srv = await server(t)
  await srv.close()
  const { client, states } = open(t, srv, { transport: 'auto', WebSocket, backoff: { initial: 5, max: 10 } })
  await waitFor(() => states.filter(s => s.state === 'reconnecting').length >= 6)
  t.equal(client.transport, 'websocket')
  t.ok(states.every(s => s.transport === 'websocket'))
})

t.test('auto: no SSE endpoint (404) goes back to WebSocket for good', async (t) => {
  const srv = await server(t)
  srv.decide = () => ({ status: 404, body: { statusCode: 404, code: 'not_found', error: 'Not Found', message: 'Route GET:/sse not found' } })
  const { client, states } = open(t, srv, { transport: 'auto', WebSocket, fallbackAfter: 2 })
  await waitFor(() => srv.requests.length === 1 && srv.upgrades >= 6)
  t.equal(client.transport, 'websocket')
  t.equal(srv.requests.length, 1, 'SSE tried once')
  t.ok(states.some(s => s.transport === 'sse'))
})
