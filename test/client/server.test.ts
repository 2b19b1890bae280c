import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { connect, type CitasLiveClient, type CitasLiveError, type ConnectionState, type Stats, type Timers } from '../../client/index.js'
import { addCita, addNegocio, build, listen, listenAgain, listenRestartable, serviceToken, sign, waitFor } from '../helper.js'

/** Real timers that keep track of the ones still pending: none left means the client will do nothing more on its own. */
function countedTimers (): Timers & { pending: Set<unknown> } {
  const pending = new Set<unknown>()
  return {
    pending,
    setTimeout: (fn, ms) => {
      const handle = setTimeout(() => { pending.delete(handle); fn() }, ms)
      pending.add(handle)
      return handle
    },
    clearTimeout: (handle) => {
      pending.delete(handle)
      clearTimeout(handle as ReturnType<typeof setTimeout>)
    },
    now: () => Date.now()
  }
}

/** The client on Node 20 with the ws package, against a real server. */
function open (t: Test, url: string, token: string, channels: string[]) {
  const timers = countedTimers()
  const states: ConnectionState[] = []
  const errors: CitasLiveError[] = []
  const stats: Stats[] = []
  const client: CitasLiveClient = connect({
    url,
    token,
    channels,
    WebSocket,
    backoff: { initial: 50, max: 200, restartWindow: 100 },
    timers,
    onState: (s) => states.push(s.state),
    onError: (e) => errors.push(e),
    onStats: (s) => stats.push(s)
  })
  t.teardown(() => client.close())
  return { client, states, errors, stats, timers }
}

t.test('subscribes, follows notify, and survives a server restart on the same port', async (t) => {
  const first = await build(t)
  await addNegocio(first.db.pool, 'n1')
  await addCita(first.db.pool, 'n1', new Date(), 'atendida')
  const { port, ws } = await listenRestartable(first.app)
  const { client, states, stats } = open(t, `${ws}/ws`, sign({ negocio_id: 'n1' }), ['n1'])
  await waitFor(() => client.stats.get('n1')?.total_citas === 1)
  t.match(client.stats.get('n1'), { citas_hoy: 1, total_citas: 1, citas_completadas: 1, citas_canceladas: 0 })

  await addCita(first.db.pool, 'n1', new Date(), 'cancelada')
  const res = await first.app.inject({ method: 'POST', url: '/notify/cita', headers: { authorization: `Bearer ${serviceToken()}` }, payload: { negocio_id: 'n1', action: 'created' } })
  t.equal(res.statusCode, 200)
  await waitFor(() => client.stats.get('n1')?.citas_canceladas === 1)

  await first.app.close()
  await waitFor(() => client.state === 'reconnecting')
  await addCita(first.db.pool, 'n1', new Date())
  const second = await build(t, { database: first.db })
  await listenAgain(second.app, port)
  await waitFor(() => client.state === 'connected')
  await waitFor(() => client.stats.get('n1')?.total_citas === 3)
  t.same(states.slice(0, 3), ['connecting', 'connected', 'reconnecting'])
  t.equal(states.at(-1), 'connected')
  t.ok(stats.length >= 3)
})

t.test('a refused token stops after one handshake and says why', async (t) => {
  const { app } = await build(t)
  let handshakes = 0
  const { ws } = await listen(app)
  app.server.on('upgrade', () => { handshakes++ })
  const { client, errors, timers } = open(t, `${ws}/ws`, sign({ negocio_id: 'n1' }, { secret: 'some-other-secret-0123456789' }), ['n1'])
  await waitFor(() => client.state === 'disconnected')
  t.match(errors, [{ code: 'unauthorized', status: 401 }])
  t.equal(timers.pending.size, 0, 'no retry pending: it has stopped for good')
  t.equal(handshakes, 1)
})

t.test('a forbidden channel is reported with its name', async (t) => {
  const { app, db } = await build(t)
  await addNegocio(db.pool, 'n1')
  const { ws } = await listen(app)
  const { client, errors } = open(t, `${ws}/ws`, sign({ negocio_id: 'n1' }), ['n1', 'otro'])
  await waitFor(() => errors.length === 1 && client.stats.has('n1'))
  t.match(errors, [{ code: 'forbidden', channel: 'estadisticas:otro' }])
  t.same(client.channels, ['estadisticas:n1'])
})

t.test('a refresh that narrows the rights: the revoked channel is reported with its name and not subscribed again', async (t) => {
  const { app, db } = await build(t, { expiry: { warningMs: 1500, sweepMs: 50 } })
  for (const id of ['n1', 'n2']) await addNegocio(db.pool, id)
  const { ws } = await listen(app)
  // The first token allows both and expires in 2-3 s; the ones after (the refresh, the reconnect) allow n1 only.
  const tokens = [sign({ sub: 'u1', negocios: ['n1', 'n2'], exp: Math.ceil(Date.now() / 1000) + 3 }), sign({ sub: 'u1', negocios: ['n1'] }, { expiresIn: 60_000 })]
  let calls = 0
  /** Every frame the client sends, per connection. */
  const sent: string[][] = []
  class RecordingWebSocket extends WebSocket {
    private readonly frames: string[] = []
    constructor (url: string, protocols?: string | string[]) {
      super(url, protocols)
      sent.push(this.frames)
    }

    override send (data: string): void {
      this.frames.push(data)
      super.send(data)
    }
  }
  const errors: CitasLiveError[] = []
  const messages: string[] = []
  const client = connect({
    url: `${ws}/ws`,
    getToken: () => tokens[Math.min(calls++, 1)] as string,
    channels: ['n1', 'n2'],
    WebSocket: RecordingWebSocket,
    backoff: { initial: 50, max: 200 },
    onError: (e) => errors.push(e)
  })
  client.on('message', (m) => messages.push(m.type))
  t.teardown(() => client.close())
  await waitFor(() => client.stats.has('n1') && client.stats.has('n2'))
  await waitFor(() => errors.length > 0, 10_000)
  t.same(messages, ['token_expiring', 'refreshed'], 'the client refreshed its token on the open connection')
  t.match(errors, [{ code: 'forbidden', channel: 'estadisticas:n2', message: 'your token no longer allows estadisticas:n2' }])
  t.same(client.channels, ['estadisticas:n1'], 'the revoked channel is dropped')
  t.notOk(client.stats.has('n2'), 'with its figures')
  t.equal(app.citasLive.hub.subscriberCount('estadisticas:n2'), 0)

  client.reconnect()
  await waitFor(() => client.state === 'connected' && app.citasLive.hub.subscriberCount('estadisticas:n1') === 1)
  const subscribes = sent.at(-1)?.map(f => JSON.parse(f)).filter(m => m.type === 'subscribe').map(m => m.data.channel)
  t.same(subscribes, ['estadisticas:n1'], 'after the reconnect only n1 is asked for')
  t.equal(errors.length, 1, 'so no second forbidden')
})

t.test('the server\'s close codes, as the client meets them: 4001 stops without getToken, 1009 stops, 1008 backs off', async (t) => {
  const { app, db } = await build(t, { expiry: { warningMs: 500, sweepMs: 50 }, limits: { messageRate: 1, messageBurst: 2, maxRefusedMessages: 3 } })
  await addNegocio(db.pool, 'n1')
  const { ws } = await listen(app)
  let handshakes = 0
  app.server.on('upgrade', () => { handshakes++ })

  await t.test('4001: a token that expires on an open connection, no getToken to refresh it', async (t) => {
    const { client, errors } = open(t, `${ws}/ws`, sign({ sub: 'u1', negocio_id: 'n1', exp: Math.ceil(Date.now() / 1000) + 2 }), ['n1'])
    await waitFor(() => client.state === 'disconnected', 10_000)
    t.match(errors, [{ code: 'unauthorized', message: 'token expired', closeCode: 4001 }])
  })

  await t.test('1009: a frame over the limit stops the client instead of repeating it on every reconnect', async (t) => {
    const { client, errors, timers } = open(t, `${ws}/ws`, sign({ sub: 'u2', negocio_id: 'n1' }), ['n1'])
    await waitFor(() => client.stats.has('n1'))
    const before = handshakes
    client.subscribe('x'.repeat(5000))
    await waitFor(() => client.state === 'disconnected')
    t.match(errors, [{ code: 'closed', message: 'message too big', closeCode: 1009 }])
    t.equal(timers.pending.size, 0, 'no retry pending')
    t.equal(handshakes, before, 'no new attempt')
  })

  await t.test('1008: a client over its message rate is closed, and comes back after a backoff', async (t) => {
    const { client, states, errors } = open(t, `${ws}/ws`, sign({ sub: 'u3', negocio_id: 'n1' }), [])
    await waitFor(() => client.state === 'connected')
    for (let i = 0; i < 10; i++) { client.subscribe('n1'); client.unsubscribe('n1') }
    await waitFor(() => states.includes('reconnecting'))
    await waitFor(() => client.state === 'connected')
    t.same(states, ['connecting', 'connected', 'reconnecting', 'connected'])
    t.same(errors.map(e => e.code), ['rate_limited'], 'told once to slow down; the close is not an error')
  })
})

t.test('over SSE against the real server: stats, notify, a forbidden channel dropped, and a new channel resumed without repeating the others', async (t) => {
  const { app, db } = await build(t)
  for (const id of ['n1', 'n2']) await addNegocio(db.pool, id)
  await addCita(db.pool, 'n1', new Date(), 'atendida')
  const { ws } = await listen(app)
  // Node's fetch (undici) opens a spare connection when a stream is aborted, and sends nothing on
  // it; the server would wait for its header timeout (over a minute) before closing.
  t.teardown(() => app.server.closeAllConnections())
  const received: Stats[] = []
  const errors: CitasLiveError[] = []
  const client = connect({
    url: `${ws}/ws`,
    token: sign({ sub: 'u1', negocios: ['n1', 'n2'] }),
    channels: ['n1', 'otro'],
    transport: 'sse',
    backoff: { initial: 50, max: 200 },
    pageEvents: false,
    onStats: (s) => received.push(s),
    onError: (e) => errors.push(e)
  })
  t.teardown(() => client.close())
  await waitFor(() => client.stats.get('n1')?.total_citas === 1)
  t.match(errors, [{ code: 'forbidden', channel: 'estadisticas:otro', status: 403 }])
  t.same(client.channels, ['estadisticas:n1'])
  t.equal(client.transport, 'sse')

  await addCita(db.pool, 'n1', new Date(), 'cancelada')
  const res = await app.inject({ method: 'POST', url: '/notify/cita', headers: { authorization: `Bearer ${serviceToken()}` }, payload: { negocio_id: 'n1', action: 'created' } })
  t.equal(res.statusCode, 200)
  await waitFor(() => client.stats.get('n1')?.citas_canceladas === 1)

  const before = received.length
  client.subscribe('n2')
  await waitFor(() => client.stats.has('n2'))
  await waitFor(() => app.citasLive.hub.subscriberCount('estadisticas:n1') === 1 && app.citasLive.hub.subscriberCount('estadisticas:n2') === 1)
  t.same(received.slice(before).map(s => s.negocio_id), ['n2'], 'the reopened stream resumed: n1, unchanged, was not sent again')
  t.equal(client.state, 'connected')
})
