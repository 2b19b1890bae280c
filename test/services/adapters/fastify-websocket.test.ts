import t, { type Test } from 'tap'
import Fastify, { type FastifyRequest } from 'fastify'
import fastifyWebsocket from '@fastify/websocket'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import WebSocket from 'ws'
import { isFastifyWebsocketUpgrade, releaseUpgrade } from '../../../services/adapters/fastify-websocket.js'
import { forcePublic, resetGuards } from '../../../services/adapters/guard.js'

interface Seen {
  socket: WebSocket
  released: boolean
  /** The TCP socket's reference to the upgrade response, after the release. */
  httpMessage: unknown
  errorListeners: number
}

function recorder (): { warn: (obj: object, msg: string) => void, lines: Array<{ obj: object, msg: string }> } {
  const lines: Array<{ obj: object, msg: string }> = []
  return { lines, warn: (obj, msg) => lines.push({ obj, msg }) }
}

/**
 * A Fastify app with @fastify/websocket whose /ws handler releases the upgrade as routes/ws.ts
 * does; `onConnection` runs in the ws server's 'connection' event, as a host's listener would.
 */
async function server (t: Test, log: ReturnType<typeof recorder>, onError: (this: WebSocket, err: Error) => void, onConnection?: (socket: WebSocket) => void) {
  const app = Fastify()
  const handlerErrors: Error[] = []
  await app.register(fastifyWebsocket, { errorHandler: (err) => { handlerErrors.push(err) } })
  if (onConnection !== undefined) app.websocketServer.on('connection', onConnection)
  const seen: Seen[] = []
  const responses = new WeakMap<object, unknown>()
  app.get('/ws', {
    websocket: true,
    preValidation: (request: FastifyRequest, reply, done) => { responses.set(request, reply.raw); done() }
  }, (socket, request) => {
    const released = releaseUpgrade(socket, request, responses.get(request), onError, log)
    const tcp = (socket as unknown as { _socket: { _httpMessage?: unknown } })._socket
    seen.push({ socket, released, httpMessage: tcp._httpMessage, errorListeners: socket.listenerCount('error') })
    socket.on('message', (data) => socket.send(data))
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(async () => await app.close())
  const connect = async (): Promise<WebSocket> => {
    const ws = new WebSocket(`ws://127.0.0.1:${(app.server.address() as AddressInfo).port}/ws`)
    t.teardown(() => ws.terminate())
    await once(ws, 'open')
    return ws
  }
  return { app, seen, connect, handlerErrors }
}

t.test('upgrade-release fast path: the socket keeps one shared error listener and no upgrade response', async (t) => {
  resetGuards()
  const log = recorder()
  const errors: Error[] = []
  function onError (this: WebSocket, err: Error): void { errors.push(err) }
  const { seen, connect, handlerErrors } = await server(t, log, onError)
  const ws = await connect()
  ws.send('echo')
  t.equal((await once(ws, 'message'))[0].toString(), 'echo', 'the socket still works')
  const [s] = seen as [Seen]
  t.equal(s.released, true)
  t.equal(s.errorListeners, 1)
  t.equal(s.socket.listeners('error')[0], onError, '@fastify/websocket\'s listener was swapped for the shared one')
  t.equal(s.httpMessage, null, 'the TCP socket no longer holds the response')
  s.socket.emit('error', new Error('boom'))
  t.same(errors.map((e) => e.message), ['boom'])
  t.same(handlerErrors, [], 'not through the errorHandler')
  t.same(log.lines, [])
})

t.test('upgrade-release fallback: another error listener on the socket, nothing is changed, logged once', async (t) => {
  resetGuards()
  t.teardown(resetGuards)
  const log = recorder()
  const errors: Error[] = []
  function onError (this: WebSocket, err: Error): void { errors.push(err) }
  // A shape the adapter does not know: one more listener than @fastify/websocket 11 adds.
  const { seen, connect, handlerErrors } = await server(t, log, onError, (socket) => socket.on('error', () => {}))
  await connect()
  await connect()
  for (const s of seen) {
    t.equal(s.released, false)
    t.equal(s.errorListeners, 2, 'both listeners kept')
    t.not(s.httpMessage, null, 'the response is left attached')
  }
  ;(seen[0] as Seen).socket.emit('error', new Error('boom'))
  t.same(handlerErrors.map((e) => e.message), ['boom'], 'errors reach @fastify/websocket\'s errorHandler')
  t.same(errors, [])
  t.equal(log.lines.length, 1)
  t.match(log.lines[0], { obj: { adapter: 'upgrade-release', reason: /2 error listeners/ }, msg: /a few KiB more per connection/ })
})

t.test('upgrade-release fallback: a response that is not the upgrade\'s', async (t) => {
  resetGuards()
  t.teardown(resetGuards)
  const log = recorder()
  const socket = new WebSocket(null as unknown as string, undefined as never, {})
  socket.on('error', () => {})
  const request = { raw: { socket: {} } } as unknown as FastifyRequest
  t.equal(releaseUpgrade(socket, request, {}, () => {}, log), false)
  t.equal(socket.listenerCount('error'), 1)
  t.match(log.lines, [{ obj: { adapter: 'upgrade-release', reason: /response/ } }])
})

t.test('upgrade-release forced onto its public path', async (t) => {
  resetGuards()
  t.teardown(resetGuards)
  forcePublic(['upgrade-release'])
  const log = recorder()
  const { seen, connect } = await server(t, log, () => {})
  await connect()
  t.match(seen, [{ released: false, errorListeners: 1 }])
  t.not((seen[0] as Seen).httpMessage, null)
  t.match(log.lines, [{ obj: { adapter: 'upgrade-release', reason: 'forced' } }])
})

t.test('@fastify/websocket\'s upgrade listener is told apart from others', async (t) => {
  const app = Fastify()
  await app.register(fastifyWebsocket)
  await app.ready()
  t.teardown(async () => await app.close())
  const listeners = app.server.listeners('upgrade')
  t.equal(listeners.length, 1)
  t.equal(isFastifyWebsocketUpgrade(listeners[0] as () => void), true)
  t.equal(isFastifyWebsocketUpgrade(function upgrade () {}), false)
  t.equal(isFastifyWebsocketUpgrade(() => {}), false)
})
