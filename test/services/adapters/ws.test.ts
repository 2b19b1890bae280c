import t, { type Test } from 'tap'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import WebSocket, { WebSocketServer, type ServerOptions } from 'ws'
import { checkSocket, inOneWrite, prepareFrame, sendFrame, serverMaxPayload } from '../../../services/adapters/ws.js'
import { forcePublic, resetGuards } from '../../../services/adapters/guard.js'
import { createHub } from '../../../services/live/hub.js'
import { WsConnection } from '../../../services/transports/websocket.js'

interface Pair {
  server: WebSocket
  client: WebSocket
  /** Every message the client received, with whether it came as binary. */
  received: Array<{ text: string, binary: boolean }>
}

/** A plain ws server and `n` clients connected to it; everything is closed at teardown. */
async function pairs (t: Test, n: number, opts: { server?: ServerOptions, client?: WebSocket.ClientOptions } = {}): Promise<Pair[]> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', ...opts.server })
  await once(wss, 'listening')
  t.teardown(async () => {
    for (const ws of wss.clients) ws.terminate()
    await new Promise((resolve) => wss.close(resolve))
  })
  const out: Pair[] = []
  for (let i = 0; i < n; i++) {
    const serverSide = once(wss, 'connection')
    const client = new WebSocket(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}`, opts.client)
    const received: Pair['received'] = []
    client.on('message', (data: Buffer, binary) => received.push({ text: data.toString(), binary }))
    t.teardown(() => client.terminate())
    const [server] = await serverSide as [WebSocket]
    await once(client, 'open')
    out.push({ server, client, received })
  }
  return out
}

async function until (cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out')
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

t.test('a hub broadcast reaches every subscriber as a text message with exactly the published text', async (t) => {
  const ps = await pairs(t, 5)
  const hub = createHub()
  for (const p of ps) hub.subscribe(hub.add(new WsConnection(p.server, { all: true, negocios: new Set() }, 20, null, null)), 'estadisticas:n1')
  // Each payload-length encoding of the frame header (7-bit, 16-bit, 64-bit), and multi-byte UTF-8.
  const messages = ['{"type":"stats"}', 'x'.repeat(126), 'ñ'.repeat(40_000), 'y'.repeat(70_000), '']
  for (const m of messages) t.equal(hub.publish('estadisticas:n1', m), 5)
  await until(() => ps.every((p) => p.received.length === messages.length))
  for (const p of ps) t.same(p.received, messages.map((text) => ({ text, binary: false })))
})

t.test('frames written directly keep their order with messages ws sends itself', async (t) => {
  const [p] = await pairs(t, 1) as [Pair]
  p.server.send('first')
  t.equal(sendFrame(p.server, prepareFrame('second')), true)
  p.server.send('third')
  await until(() => p.received.length === 3)
  t.same(p.received.map((r) => r.text), ['first', 'second', 'third'])
})

t.test('while ws is compressing a message, a broadcast waits in its queue instead of overtaking it', async (t) => {
  const deflate = { threshold: 0 }
  const [p] = await pairs(t, 1, { server: { perMessageDeflate: deflate }, client: { perMessageDeflate: deflate } }) as [Pair]
  const long = 'compress me '.repeat(10_000)
  p.server.send(long)
  t.equal(sendFrame(p.server, prepareFrame('after')), true)
  await until(() => p.received.length === 2)
  t.same(p.received.map((r) => r.text), [long, 'after'])
})

t.test('nothing is written to a socket that is closing or closed', async (t) => {
  const [p] = await pairs(t, 1) as [Pair]
  p.server.close(1000)
  t.equal(sendFrame(p.server, prepareFrame('late')), false)
  await once(p.client, 'close')
  t.same(p.received, [])
})

/** Counts the writes that reach the TCP socket's handle (one per system call) of a pair's server side. */
function handleWrites (p: Pair): () => number {
  const tcp = (p.server as unknown as { _socket: { _writeGeneric: (...args: unknown[]) => void } })._socket
  const write = tcp._writeGeneric.bind(tcp)
  let n = 0
  tcp._writeGeneric = (...args: unknown[]) => { n++; write(...args) }
  return () => n
}

t.test('messages sent inside inOneWrite leave in one write, in order; on the public path one write each', async (t) => {
  resetGuards()
  const [p] = await pairs(t, 1) as [Pair]
  t.equal(checkSocket(p.server), true)
  const writes = handleWrites(p)
  inOneWrite(p.server, () => {
    p.server.send('{"type":"subscribed"}')
    p.server.send('{"type":"stats"}')
  })
  t.equal(writes(), 1, 'one write for both')
  await until(() => p.received.length === 2)
  t.same(p.received.map((r) => r.text), ['{"type":"subscribed"}', '{"type":"stats"}'])

  forcePublic(['ws-send'])
  t.teardown(() => resetGuards())
  inOneWrite(p.server, () => {
    p.server.send('a')
    p.server.send('b')
  })
  t.equal(writes(), 3, 'public path: one write each')
  await until(() => p.received.length === 4)
  t.same(p.received.slice(2).map((r) => r.text), ['a', 'b'])
  t.throws(() => inOneWrite(p.server, () => { throw new Error('boom') }), /boom/)
})

/** A logger that keeps what it is told. */
function recorder (): { warn: (obj: object, msg: string) => void, lines: Array<{ obj: object, msg: string }> } {
  const lines: Array<{ obj: object, msg: string }> = []
  return { lines, warn: (obj, msg) => lines.push({ obj, msg }) }
}

t.test('the frame is RFC 6455\'s: FIN, text opcode, no mask, the shortest length encoding', async (t) => {
  for (const [length, header] of [[0, [0x81, 0]], [125, [0x81, 125]], [126, [0x81, 126, 0, 126]], [65_535, [0x81, 126, 0xff, 0xff]],
    [65_536, [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]]] as Array<[number, number[]]>) {
    const { frame, payload } = prepareFrame('a'.repeat(length))
    t.same([...frame.subarray(0, header.length)], header, `${length} bytes`)
    t.equal(frame.length, header.length + length)
    t.ok(frame.subarray(header.length).equals(payload))
  }
})

t.test('ws-send fast path: a socket of the checked class gets the shared frame written to its TCP socket', async (t) => {
  resetGuards()
  const [p] = await pairs(t, 1) as [Pair]
  const log = recorder()
  t.equal(checkSocket(p.server, log), true)
  let sends = 0
  const send = p.server.send.bind(p.server)
  p.server.send = ((...args: Parameters<WebSocket['send']>) => { sends++; send(...args) }) as WebSocket['send']
  const tcp = (p.server as unknown as { _socket: { _writeGeneric: (w: boolean, b: Buffer, e: string, cb: unknown) => void } })._socket
  const written: Buffer[] = []
  const write = tcp._writeGeneric.bind(tcp)
  tcp._writeGeneric = function (w: boolean, b: Buffer, e: string, cb: unknown) { written.push(b); write(w, b, e, cb) }
  const prepared = prepareFrame('{"type":"stats"}')
  t.equal(sendFrame(p.server, prepared), true)
  await until(() => p.received.length === 1)
  t.equal(sends, 0, 'not through ws.send')
  t.equal(written[0], prepared.frame, 'the very Buffer built once')
  t.same(p.received, [{ text: '{"type":"stats"}', binary: false }])
  t.same(log.lines, [])
})

t.test('ws-send fallback: a socket whose class lacks the known fields goes through ws.send, logged once', async (t) => {
  resetGuards()
  t.teardown(resetGuards)
  // A WebSocket of another shape: what a ws version that renamed its private fields looks like from outside.
  class Other {
    readyState = 1
    bufferedAmount = 0
    sent: Array<[unknown, unknown]> = []
    send (data: unknown, options: unknown): void { this.sent.push([data, options]) }
  }
  const log = recorder()
  const a = new Other()
  const b = new Other()
  t.equal(checkSocket(a as unknown as WebSocket, log), false)
  t.equal(checkSocket(b as unknown as WebSocket, log), false)
  const prepared = prepareFrame('{"type":"stats"}')
  t.equal(sendFrame(a as unknown as WebSocket, prepared), true)
  t.same(a.sent, [[prepared.payload, { binary: false }]], 'the payload, encoded once, through the public send')
  t.equal(log.lines.length, 1, 'one log line, however many sockets')
  t.match(log.lines[0], { obj: { adapter: 'ws-send', reason: /_socket/ }, msg: /ws-send: .*public API/ })

  // From then on every socket takes the public path, real ws ones included, and messages still arrive.
  const [p] = await pairs(t, 1) as [Pair]
  t.equal(checkSocket(p.server, log), false)
  t.equal(sendFrame(p.server, prepareFrame('after')), true)
  await until(() => p.received.length === 1)
  t.same(p.received, [{ text: 'after', binary: false }])
  t.equal(log.lines.length, 1)
})

t.test('ws-send forced onto its public path (what the benchmark compares with)', async (t) => {
  resetGuards()
  t.teardown(resetGuards)
  forcePublic(['ws-send'])
  const ps = await pairs(t, 3)
  const log = recorder()
  for (const p of ps) t.equal(checkSocket(p.server, log), false)
  const hub = createHub()
  for (const p of ps) hub.subscribe(hub.add(new WsConnection(p.server, { all: true, negocios: new Set() }, 20, null, null)), 'c')
  t.equal(hub.publish('c', 'x'.repeat(70_000)), 3)
  await until(() => ps.every((p) => p.received.length === 1))
  for (const p of ps) t.same(p.received, [{ text: 'x'.repeat(70_000), binary: false }])
  t.match(log.lines, [{ obj: { adapter: 'ws-send', reason: 'forced' } }])
})

t.test('ws-server-options: the maxPayload of a ws server, or undefined (logged once) when it cannot be read', async (t) => {
  resetGuards()
  t.teardown(resetGuards)
  const log = recorder()
  const wss = new WebSocketServer({ noServer: true, maxPayload: 12_345 })
  t.equal(serverMaxPayload(wss, log), 12_345)
  t.equal(serverMaxPayload(new WebSocketServer({ noServer: true }), log), 100 * 1024 * 1024, 'ws\'s default')
  t.same(log.lines, [])
  const renamed = { settings: { maxPayload: 1 } } as unknown as WebSocketServer
  t.equal(serverMaxPayload(renamed, log), undefined)
  t.equal(serverMaxPayload(renamed, log), undefined)
  t.equal(log.lines.length, 1)
  t.match(log.lines[0], { obj: { adapter: 'ws-server-options' }, msg: /not checked/ })
})
