import t, { type Test } from 'tap'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import WebSocket, { WebSocketServer, type ServerOptions } from 'ws'
import { prepareFrame, sendFrame } from '../../services/frame.js'
import { createHub } from '../../services/hub.js'

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
  for (const p of ps) hub.subscribe(hub.add(p.server, { all: true, negocios: new Set() }), 'estadisticas:n1')
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
