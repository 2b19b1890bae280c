import t, { type Test } from 'tap'
import { connect, type ConnectOptions, type CitasLiveError, type StateChange, type Stats } from '../../client/index.js'
import { CLOSE, CLOSE_ACTIONS, type CloseCode } from '../../protocol.js'
import { FakeClock, FakePage, FakeSocket, TerminableSocket, fakeToken, flush } from './fakes.js'

const TOKEN = fakeToken({ sub: 'u1', negocios: ['n1', 'n2'] })

function stats (negocio: string, total: number): Stats {
  return { negocio_id: negocio, citas_hoy: 1, total_citas: total, citas_completadas: 0, citas_canceladas: 0, timestamp: 1 }
}

/** A client on fake sockets and a fake clock; random() is 0.5 so every delay is half its ceiling. */
function setup (t: Test, opts: Partial<ConnectOptions> = {}) {
  FakeSocket.reset()
  const clock = new FakeClock()
  const page = new FakePage()
  const states: StateChange[] = []
  const errors: CitasLiveError[] = []
  const received: Stats[] = []
  const probes: Array<{ url: string, headers: Record<string, string> }> = []
  const client = connect({
    url: 'ws://example.test/ws',
    token: TOKEN,
    channels: ['n1', 'estadisticas:n2'],
    WebSocket: FakeSocket,
    timers: clock,
    random: () => 0.5,
    pageEvents: page,
    fetch: async (url, init) => {
      probes.push({ url, headers: init.headers })
      throw new Error('unreachable')
    },
    onState: (s) => states.push(s),
    onError: (e) => errors.push(e),
    onStats: (s) => received.push(s),
    ...opts
  })
  t.teardown(() => client.close())
  return { client, clock, page, states, errors, received, probes, names: () => states.map(s => s.state) }
}

t.test('connects with the token as a subprotocol, subscribes, and reports stats', async (t) => {
  const { client, names, received } = setup(t)
  await flush()
  t.equal(client.state, 'connecting')
  const s = FakeSocket.last
  t.equal(s.url, 'ws://example.test/ws')
  t.same(s.protocols, ['bearer', TOKEN], 'the token stays out of the URL')
  s.accept()
  t.same(names(), ['connecting', 'connected'])
  t.same(s.sentOfType('subscribe').map(m => m.data.channel), ['estadisticas:n1', 'estadisticas:n2'], 'bare negocio ids become channels')
  s.receive({ type: 'stats', data: stats('n1', 5) })
  t.same(received, [stats('n1', 5)])
  t.same(client.stats.get('n1'), stats('n1', 5))
})

t.test('tokenIn: query puts the token in the URL, as the Go clients did', async (t) => {
  setup(t, { tokenIn: 'query', url: 'ws://example.test/ws?x=1' })
  await flush()
  t.equal(FakeSocket.last.url, `ws://example.test/ws?x=1&token=${TOKEN}`)
  t.equal(FakeSocket.last.protocols, undefined)
})

t.test('a lost connection reconnects after a jittered delay, asks getToken again, resubscribes, and the snapshot replaces the figures', async (t) => {
  let calls = 0
  const { client, clock, names, states } = setup(t, { token: undefined, getToken: () => fakeToken({ negocios: ['n1'], n: ++calls }) })
  await flush()
  t.equal(calls, 1)
  const first = FakeSocket.last
  first.accept()
  first.receive({ type: 'stats', data: stats('n1', 5) })
  first.serverClose(1006)
  t.equal(client.state, 'reconnecting')
  t.equal(states.at(-1)?.delay, 250, 'attempt 0: half of the 500 ms ceiling')
  await clock.advance(249)
  t.equal(FakeSocket.all.length, 1, 'not before the delay')
  await clock.advance(1)
  t.equal(FakeSocket.all.length, 2)
  t.equal(calls, 2, 'getToken() called before the reconnect')
  t.equal((FakeSocket.last.protocols as string[])[1], fakeToken({ negocios: ['n1'], n: 2 }), 'with the fresh token')
  FakeSocket.last.accept()
  t.same(FakeSocket.last.sentOfType('subscribe').map(m => m.data.channel), ['estadisticas:n1', 'estadisticas:n2'])
  FakeSocket.last.receive({ type: 'stats', data: stats('n1', 9) })
  t.equal(client.stats.get('n1')?.total_citas, 9)
  t.same(names(), ['connecting', 'connected', 'reconnecting', 'connected'])
})

t.test('failed attempts back off exponentially up to the cap; a stable connection resets it', async (t) => {
  const { clock, states } = setup(t, { probe: false })
  await flush()
  const delays: number[] = []
  for (let i = 0; i < 9; i++) {
    FakeSocket.last.refuse()
    await flush()
    const delay = states.at(-1)?.delay as number
    delays.push(delay)
    await clock.advance(delay)
  }
  t.same(delays, [250, 500, 1000, 2000, 4000, 8000, 15000, 15000, 15000])
  t.equal(FakeSocket.all.length, 10)

  FakeSocket.last.accept()
  await clock.advance(1000)
  FakeSocket.last.serverClose(1006)
  t.equal(states.at(-1)?.delay, 15000, 'a connection that did not last keeps the backoff')
  await clock.advance(15000)
  FakeSocket.last.accept()
  await clock.advance(5000)
  FakeSocket.last.serverClose(1006)
  t.equal(states.at(-1)?.delay, 250, 'reset after 5 s connected')
})

t.test('1012 (server restarting) reconnects after a delay drawn from the restart window', async (t) => {
  const { clock, states } = setup(t)
  await flush()
  FakeSocket.last.accept()
  FakeSocket.last.serverClose(1012, 'server restarting')
  t.equal(states.at(-1)?.state, 'reconnecting')
  t.equal(states.at(-1)?.delay, 2500)
  await clock.advance(2499)
  t.equal(FakeSocket.all.length, 1)
  await clock.advance(1)
  t.equal(FakeSocket.all.length, 2)
})

t.test('a 401 seen by the ws package stops at once without getToken', async (t) => {
  const { client, clock, errors, states, probes } = setup(t)
  await flush()
  FakeSocket.last.refuse(401)
  await flush()
  t.equal(client.state, 'disconnected')
  t.equal(states.at(-1)?.error?.code, 'unauthorized')
  t.match(errors, [{ code: 'unauthorized', status: 401 }])
  t.equal(probes.length, 0, 'no probe needed when the status is known')
  await clock.advance(10 * 60_000)
  t.equal(FakeSocket.all.length, 1, 'never retried with the dead token')
  t.equal(clock.pending, 0, 'no timer left')
})

t.test('in a browser the status is hidden: the HTTP probe finds the 401 and its reason', async (t) => {
  const probes: Array<{ url: string, auth: string }> = []
  const { client, errors } = setup(t, {
    url: 'wss://example.test/live/ws',
    fetch: async (url, init) => {
      probes.push({ url, auth: init.headers.authorization ?? '' })
      return { status: 401, text: async () => JSON.stringify({ statusCode: 401, code: 'unauthorized', message: 'invalid token signature' }) }
    }
  })
  await flush()
  FakeSocket.last.refuse()
  await flush()
  t.same(probes, [{ url: 'https://example.test/live/ws', auth: `Bearer ${TOKEN}` }])
  t.equal(client.state, 'disconnected')
  t.match(errors, [{ code: 'unauthorized', message: 'invalid token signature', status: 401 }])
})

t.test('a probe that is not a 401 (or cannot be made) means "not the token": back off', async (t) => {
  const { client, probes } = setup(t, { fetch: async () => ({ status: 404, text: async () => '' }) })
  await flush()
  FakeSocket.last.refuse()
  await flush()
  t.equal(client.state, 'reconnecting')
  t.equal(probes.length, 0)

  const unreachable = setup(t)
  await flush()
  FakeSocket.last.refuse()
  await flush()
  t.equal(unreachable.client.state, 'reconnecting')
  t.equal(unreachable.probes.length, 1)
})

t.test('a token expired long ago counts as refused even when the server cannot say so', async (t) => {
  const { client, clock, errors } = setup(t, { token: fakeToken({ negocios: ['n1'], exp: 1 }) })
  await clock.advance(0)
  FakeSocket.last.refuse()
  await flush()
  t.equal(client.state, 'disconnected')
  t.match(errors, [{ code: 'unauthorized', message: 'token expired' }])
})

t.test('with getToken, a refused token is replaced once; a second refusal stops', async (t) => {
  let n = 0
  const { client, clock, errors } = setup(t, { getToken: () => fakeToken({ n: ++n }) })
  await flush()
  FakeSocket.last.refuse(401)
  await clock.advance(0)
  t.equal(n, 1, 'getToken() asked for a fresh token')
  t.equal(FakeSocket.all.length, 2, 'retried at once with it')
  t.equal((FakeSocket.last.protocols as string[])[1], fakeToken({ n: 1 }))
  FakeSocket.last.refuse(401)
  await clock.advance(0)
  t.equal(client.state, 'disconnected')
  t.equal(FakeSocket.all.length, 2)
  t.match(errors, [{ code: 'unauthorized' }])
})

t.test('getToken() returning the refused token again stops without another handshake', async (t) => {
  const { client, clock } = setup(t, { getToken: () => TOKEN })
  await flush()
  FakeSocket.last.refuse(401)
  await clock.advance(0)
  t.equal(client.state, 'disconnected')
  t.equal(FakeSocket.all.length, 1)
})

t.test('close 4001 (token expired): a new token and an immediate reconnect with getToken, else stop', async (t) => {
  let n = 0
  const withGetToken = setup(t, { getToken: () => fakeToken({ n: ++n }) })
  await flush()
  FakeSocket.last.accept()
  FakeSocket.last.serverClose(4001, 'token expired')
  t.equal(withGetToken.states.at(-1)?.delay, 0)
  await withGetToken.clock.advance(0)
  t.equal(FakeSocket.all.length, 2)
  t.equal(n, 1)
  FakeSocket.last.accept()
  t.equal(withGetToken.client.state, 'connected')

  const without = setup(t)
  await flush()
  FakeSocket.last.accept()
  FakeSocket.last.serverClose(4001, 'token expired')
  t.equal(without.client.state, 'disconnected')
  t.match(without.errors, [{ code: 'unauthorized', message: 'token expired', closeCode: 4001 }])
})

t.test('every close code the server sends is handled as the protocol module says', async (t) => {
  const reasons = new Map<number, string>(Object.values(CLOSE).map(c => [c.code, c.reason]))
  for (const [key, action] of Object.entries(CLOSE_ACTIONS)) {
    const code = Number(key) as CloseCode
    await t.test(`${code}: ${action}`, async (t) => {
      let tokens = 0
      const { client, clock, errors, states } = setup(t, { getToken: () => fakeToken({ n: ++tokens }) })
      await flush()
      FakeSocket.last.accept()
      await clock.advance(5000) // a stable connection: the backoff starts over
      FakeSocket.last.serverClose(code, reasons.get(code))
      await flush()
      switch (action) {
        case 'backoff':
          t.match(states.at(-1), { state: 'reconnecting', delay: 250 }, 'the first backoff step')
          t.same(errors, [])
          break
        case 'soon':
          t.match(states.at(-1), { state: 'reconnecting', delay: 2500 }, 'within the restart window')
          t.same(errors, [])
          break
        case 'token':
          t.match(states.at(-1), { state: 'reconnecting', delay: 0 }, 'at once')
          await clock.advance(0)
          t.equal(tokens, 1, 'with a new token from getToken()')
          t.equal(FakeSocket.all.length, 2)
          break
        case 'stop':
          t.equal(client.state, 'disconnected', 'the same client would be closed again')
          t.match(errors, [{ code: 'closed', closeCode: code }])
          t.match(states.at(-1), { state: 'disconnected', error: { closeCode: code } })
          await clock.advance(60_000)
          t.equal(FakeSocket.all.length, 1, 'no new attempt')
      }
    })
  }
})

t.test('4401 and 4403 are not token refusals: the server never sends them', async (t) => {
  for (const code of [4401, 4403]) {
    let tokens = 0
    const { client, errors, states } = setup(t, { getToken: () => fakeToken({ n: ++tokens }) })
    await flush()
    FakeSocket.last.accept()
    FakeSocket.last.serverClose(code)
    t.match(states.at(-1), { state: 'reconnecting', delay: 250 }, `${code}: backoff, like any code the server does not send`)
    t.same(errors, [])
    client.close()
  }
})

t.test('authCloseCodes: a proxy\'s own code can mean "token refused"', async (t) => {
  const { client, errors } = setup(t, { authCloseCodes: [4403] })
  await flush()
  FakeSocket.last.accept()
  FakeSocket.last.serverClose(4403, 'proxy says no')
  t.equal(client.state, 'disconnected')
  t.match(errors, [{ code: 'unauthorized', message: 'proxy says no', closeCode: 4403 }])
})

t.test('token_expiring: the client hands the server a fresh token on the open connection', async (t) => {
  const fresh = fakeToken({ n: 'fresh' })
  setup(t, { getToken: () => fresh })
  await flush()
  FakeSocket.last.accept()
  FakeSocket.last.receive({ type: 'token_expiring', data: { expires_at: 123 } })
  await flush()
  t.same(FakeSocket.last.sentOfType('refresh'), [{ type: 'refresh', data: { token: fresh } }])
})

t.test('heartbeat: a ping after silence; no answer drops the connection and reconnects', async (t) => {
  const { client, clock } = setup(t, { heartbeat: { interval: 1000, timeout: 500 } })
  await flush()
  const s = FakeSocket.last
  s.accept()
  await clock.advance(999)
  t.equal(s.sentOfType('ping').length, 0)
  s.receive({ type: 'stats', data: stats('n1', 1) })
  await clock.advance(999)
  t.equal(s.sentOfType('ping').length, 0, 'any message proves the connection alive')
  await clock.advance(1)
  t.equal(s.sentOfType('ping').length, 1)
  s.receive({ type: 'pong' })
  await clock.advance(999)
  t.equal(client.state, 'connected')
  await clock.advance(1)
  t.equal(s.sentOfType('ping').length, 2)
  await clock.advance(500)
  t.equal(client.state, 'reconnecting', 'no pong within the timeout')
  t.equal(s.closedWith?.code, 4000)
})

t.test('with ws\'s terminate(): a dead connection is terminated, close() still closes with 1000', async (t) => {
  const { client, clock } = setup(t, { WebSocket: TerminableSocket, heartbeat: { interval: 1000, timeout: 500 } })
  await flush()
  const dead = FakeSocket.last as TerminableSocket
  dead.accept()
  await clock.advance(1500)
  t.ok(dead.terminated, 'no close handshake with a peer that does not answer')
  t.equal(dead.closedWith, null)
  await clock.advance(250)
  const live = FakeSocket.last as TerminableSocket
  t.not(live, dead)
  live.accept()
  client.close()
  t.equal(live.terminated, false)
  t.equal(live.closedWith?.code, 1000)
})

t.test('back online or visible: retry at once instead of waiting out the backoff', async (t) => {
  const { client, clock, page } = setup(t, { probe: false })
  await flush()
  for (let i = 0; i < 6; i++) {
    FakeSocket.last.refuse()
    await clock.advance(30_000)
  }
  FakeSocket.last.refuse()
  await flush()
  const before = FakeSocket.all.length
  page.fireOnline()
  await flush()
  t.equal(FakeSocket.all.length, before + 1, 'online: a new attempt now')
  FakeSocket.last.refuse()
  await flush()
  page.fireVisible()
  await flush()
  t.equal(FakeSocket.all.length, before + 2, 'visible: a new attempt now')
  FakeSocket.last.accept()
  page.fireVisible()
  t.equal(FakeSocket.last.sentOfType('ping').length, 1, 'visible while connected: check the connection with a ping')
  t.equal(client.state, 'connected')
})

t.test('subscribe errors name the channel; forbidden channels are not sent again', async (t) => {
  const { client, clock, errors } = setup(t)
  await flush()
  FakeSocket.last.accept()
  const sub = FakeSocket.last.sentOfType('subscribe').find(m => m.data.channel === 'estadisticas:n2')
  FakeSocket.last.receive({ type: 'error', id: sub.id, data: { code: 'forbidden', message: 'your token does not allow estadisticas:n2' } })
  t.match(errors, [{ code: 'forbidden', channel: 'estadisticas:n2' }])
  t.same(client.channels, ['estadisticas:n1'])
  FakeSocket.last.serverClose(1006)
  await clock.advance(1000)
  FakeSocket.last.accept()
  t.same(FakeSocket.last.sentOfType('subscribe').map(m => m.data.channel), ['estadisticas:n1'])
})

t.test('a refresh that narrows the rights: the revoked channel is reported with its name, dropped, and not sent again', async (t) => {
  const narrow = fakeToken({ sub: 'u1', negocios: ['n1'] })
  const { client, clock, errors } = setup(t, { getToken: () => narrow })
  await flush()
  FakeSocket.last.accept()
  FakeSocket.last.receive({ type: 'stats', data: stats('n1', 1) })
  FakeSocket.last.receive({ type: 'stats', data: stats('n2', 2) })
  FakeSocket.last.receive({ type: 'token_expiring', data: { expires_at: 123 } })
  await flush()
  t.same(FakeSocket.last.sentOfType('refresh'), [{ type: 'refresh', data: { token: narrow } }])
  // What the server answers (routes/ws.ts refresh()): refreshed, then one error per channel the new token does not allow.
  FakeSocket.last.receive({ type: 'refreshed', data: { expires_at: 456 } })
  FakeSocket.last.receive({ type: 'error', data: { code: 'forbidden', message: 'your token no longer allows estadisticas:n2', channel: 'estadisticas:n2' } })
  t.match(errors, [{ code: 'forbidden', channel: 'estadisticas:n2', message: 'your token no longer allows estadisticas:n2' }])
  t.same(client.channels, ['estadisticas:n1'], 'the revoked channel is dropped')
  t.same([...client.stats.keys()], ['n1'], 'and its figures, which will not be updated any more')
  FakeSocket.last.serverClose(1006)
  await clock.advance(1000)
  FakeSocket.last.accept()
  t.same(FakeSocket.last.sentOfType('subscribe').map(m => m.data.channel), ['estadisticas:n1'], 'not subscribed again after a reconnect')
})

t.test('a business deleted while watched: not_found with data.channel drops the channel', async (t) => {
  const { client, errors } = setup(t)
  await flush()
  FakeSocket.last.accept()
  FakeSocket.last.receive({ type: 'stats', data: stats('n2', 2) })
  FakeSocket.last.receive({ type: 'error', data: { code: 'not_found', message: 'estadisticas:n2 no longer exists', channel: 'estadisticas:n2' } })
  t.match(errors, [{ code: 'not_found', channel: 'estadisticas:n2' }])
  t.same(client.channels, ['estadisticas:n1'])
  t.equal(client.stats.has('n2'), false)
})

t.test('subscribe and unsubscribe at run time', async (t) => {
  const { client } = setup(t, { channels: [] })
  client.subscribe('n3')
  await flush()
  FakeSocket.last.accept()
  t.same(FakeSocket.last.sentOfType('subscribe').map(m => m.data.channel), ['estadisticas:n3'], 'queued until connected')
  client.subscribe('n4')
  FakeSocket.last.receive({ type: 'stats', data: stats('n4', 2) })
  client.unsubscribe('n4')
  t.same(FakeSocket.last.sentOfType('unsubscribe'), [{ type: 'unsubscribe', data: { channel: 'estadisticas:n4' } }])
  t.equal(client.stats.has('n4'), false)
})

t.test('an attempt that hangs is given up after connectTimeout', async (t) => {
  const { client, clock } = setup(t, { connectTimeout: 2000, probe: false })
  await flush()
  await clock.advance(2000)
  t.equal(FakeSocket.all[0]?.closedWith?.code, 4000)
  t.equal(client.state, 'reconnecting')
})

t.test('close() stops everything: socket closed, no timers, no page listeners; reconnect() starts again', async (t) => {
  const { client, clock, page, names } = setup(t)
  await flush()
  FakeSocket.last.accept()
  client.close()
  t.equal(FakeSocket.last.closedWith?.code, 1000)
  t.equal(client.state, 'disconnected')
  t.equal(clock.pending, 0)
  t.equal(page.online.size + page.visible.size, 0)
  t.same(names(), ['connecting', 'connected', 'disconnected'])
  client.reconnect()
  await flush()
  t.equal(FakeSocket.all.length, 2)
  t.equal(page.online.size, 1)
})

t.test('bad options fail at once', async (t) => {
  t.throws(() => connect({ url: '', token: 'x', WebSocket: FakeSocket }), TypeError)
  t.throws(() => connect({ url: 'ws://x/ws', WebSocket: FakeSocket }), /token or getToken/)
  const g = globalThis as { WebSocket?: unknown }
  const saved = g.WebSocket
  delete g.WebSocket
  t.teardown(() => { if (saved !== undefined) g.WebSocket = saved })
  t.throws(() => connect({ url: 'ws://x/ws', token: 'x', transport: 'websocket' }), /no global WebSocket/)
  t.throws(() => connect({ url: 'ws://x/ws', token: 'x', transport: 'carrier-pigeon' as never }), /unknown transport/)
  // auto without any WebSocket (Node 20 without the ws package): Server-Sent Events from the start.
  const client = connect({ url: 'ws://x/ws', token: 'x', pageEvents: false, fetch: async () => await new Promise(() => {}) })
  t.equal(client.transport, 'sse')
  client.close()
  const f = globalThis as { fetch?: unknown }
  const savedFetch = f.fetch
  delete f.fetch
  t.teardown(() => { f.fetch = savedFetch })
  t.throws(() => connect({ url: 'ws://x/ws', token: 'x', transport: 'sse', WebSocket: FakeSocket }), /needs fetch/)
  t.throws(() => connect({ url: 'ws://x/ws', token: 'x' }), /no global WebSocket/, 'auto with neither')
})

t.test('a listener that throws does not break the client', async (t) => {
  const { client } = setup(t)
  const seen: unknown[] = []
  const onUncaught = (err: unknown): void => { seen.push(err) }
  process.on('uncaughtException', onUncaught)
  t.teardown(() => { process.off('uncaughtException', onUncaught) })
  const off = client.on('state', () => { throw new Error('listener bug') })
  await flush()
  FakeSocket.last.accept()
  await flush()
  off()
  t.equal(client.state, 'connected')
  t.match(seen, [{ message: 'listener bug' }])
})

t.test('auto: only failures in a row while HTTP answers count towards the switch to SSE', async (t) => {
  const answers = [404, 404, null, 404, 401, 404, 404]
  const urls: string[] = []
  let n = 0
  const { client, clock, states } = setup(t, {
    fallbackAfter: 3,
    fetch: async (url) => {
      urls.push(url)
      if (url.includes('/sse')) return await new Promise(() => {})
      const status = answers.shift()
      if (status === null || status === undefined) throw new Error('unreachable')
      return { status, text: async () => '{"message":"token expired"}' }
    },
    getToken: () => fakeToken({ negocios: ['n1'], n: ++n })
  })
  await flush()
  const transports: string[] = []
  while (client.transport === 'websocket' && FakeSocket.all.length < 20) {
    transports.push(client.transport)
    FakeSocket.last.refuse()
    await flush()
    await clock.advance(states.at(-1)?.delay ?? 0)
  }
  t.equal(client.transport, 'sse')
  t.equal(FakeSocket.all.length, 7, 'HTTP answered 404, 404, then nothing (the streak starts over), 404, 401 (a refused token: retried at once with a new one), 404, 404')
  t.equal(states.at(-1)?.transport, 'sse')
  t.equal(urls.at(-1), 'http://example.test/sse?channels=estadisticas%3An1%2Cestadisticas%3An2')
  await clock.advance(60_000)
  t.equal(FakeSocket.all.length, 7, 'no WebSocket attempt after the switch')
})
