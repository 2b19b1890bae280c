import t, { type Test } from 'tap'
import { once } from 'node:events'
import net, { type AddressInfo, type Socket } from 'node:net'
import { checkDirectWrite, directWritesInFlight, writeDirect } from '../../../services/adapters/net.js'
import { forcePublic, resetGuards } from '../../../services/adapters/guard.js'
import { waitFor } from '../../helper.js'

interface Pair {
  /** The server's side, which writeDirect writes to. */
  server: Socket
  client: Socket
  /** Every byte the client read, in order. */
  received: () => Buffer
  /** How many times the stream-level socket.write ran on the server's side. */
  streamWrites: () => number
}

/** A TCP connection over loopback; both ends destroyed at teardown. */
async function pair (t: Test): Promise<Pair> {
  const listener = net.createServer()
  listener.listen(0, '127.0.0.1')
  await once(listener, 'listening')
  t.teardown(() => listener.close())
  const accepted = once(listener, 'connection')
  const client = net.connect((listener.address() as AddressInfo).port, '127.0.0.1')
  const [server] = await accepted as [Socket]
  await once(client, 'connect')
  t.teardown(() => { client.destroy(); server.destroy() })
  const chunks: Buffer[] = []
  client.on('data', (chunk: Buffer) => chunks.push(chunk))
  let writes = 0
  const write = server.write.bind(server)
  server.write = ((...args: Parameters<Socket['write']>) => { writes++; return write(...args) }) as Socket['write']
  return { server, client, received: () => Buffer.concat(chunks), streamWrites: () => writes }
}

t.beforeEach(() => resetGuards())
t.teardown(() => resetGuards())

t.test('an idle socket gets the bytes without the stream layer; the stream has nothing queued after', async (t) => {
  const p = await pair(t)
  t.equal(checkDirectWrite(p.server), true, 'this Node has the known shape')
  writeDirect(p.server, Buffer.from('hola '))
  writeDirect(p.server, Buffer.from('mundo'))
  t.equal(p.streamWrites(), 0, 'socket.write never ran')
  t.equal(p.server.writableLength, 0)
  await waitFor(() => p.received().length === 10)
  t.equal(p.received().toString(), 'hola mundo')
})

t.test('a reader that stops reading: libuv keeps the rest, later writes go through the stream and are counted, nothing reordered', async (t) => {
  const p = await pair(t)
  p.client.pause()
  const chunk = (i: number): Buffer => Buffer.alloc(64 * 1024, i % 256)
  let i = 0
  // Until one direct write is left waiting in libuv (the kernel's buffers are full); bounded.
  while (directWritesInFlight() === 0 && i < 2000) writeDirect(p.server, chunk(i++))
  t.equal(directWritesInFlight(), 1, 'one direct write waits in libuv')
  t.equal(p.streamWrites(), 0)
  const direct = i
  writeDirect(p.server, chunk(i++))
  writeDirect(p.server, chunk(i++))
  t.equal(p.streamWrites(), 2, 'the next writes took socket.write')
  t.ok(p.server.writableLength > 0, 'and the stream counts them (what bufferedAmount reads)')
  p.client.resume()
  await waitFor(() => p.received().length === i * 64 * 1024, 30_000)
  const all = p.received()
  for (let k = 0; k < i; k++) {
    if (all[k * 64 * 1024] !== k % 256 || all[(k + 1) * 64 * 1024 - 1] !== k % 256) {
      t.fail(`chunk ${k} out of place`)
      return
    }
  }
  t.pass(`${i} chunks in order, ${direct} of them direct`)
  t.equal(directWritesInFlight(), 0, 'the waiting write completed')
})

t.test('a write the kernel refuses destroys the socket with the error, as the stream would', async (t) => {
  const p = await pair(t)
  // The server does not read, so it learns of the reset only by writing.
  p.server.pause()
  const errors: Error[] = []
  p.server.on('error', (err) => errors.push(err))
  p.client.resetAndDestroy()
  await once(p.client, 'close')
  // The reset reaches the server's kernel first; the first write after it fails.
  await waitFor(() => {
    if (!p.server.destroyed) writeDirect(p.server, Buffer.from('x'))
    return p.server.destroyed
  })
  await waitFor(() => errors.length === 1)
  t.match((errors[0] as NodeJS.ErrnoException).code, /^(EPIPE|ECONNRESET)$/)
  t.equal(p.streamWrites(), 0, 'every write was a direct one')
})

t.test('forced onto its public path, every write is socket.write', async (t) => {
  const p = await pair(t)
  forcePublic(['net-write'])
  const lines: object[] = []
  t.equal(checkDirectWrite(p.server, { warn: (obj) => lines.push(obj) }), false)
  t.match(lines, [{ adapter: 'net-write', reason: 'forced' }])
  writeDirect(p.server, Buffer.from('abc'))
  t.equal(p.streamWrites(), 1)
  await waitFor(() => p.received().toString() === 'abc')
})

t.test('a socket without the known internals takes socket.write, logged once', async (t) => {
  const p = await pair(t)
  const lines: Array<{ obj: object, msg: string }> = []
  const log = { warn: (obj: object, msg: string) => lines.push({ obj, msg }) }
  // Another signature than the one the adapter knows (the stream itself still works with it).
  const internals = p.server as unknown as { _writeGeneric: (...args: unknown[]) => unknown }
  const original = internals._writeGeneric
  internals._writeGeneric = function (this: unknown, writev: unknown, data: unknown, encoding: unknown, cb: unknown, _extra?: unknown) {
    return original.call(this, writev, data, encoding, cb)
  }
  t.equal(checkDirectWrite(p.server, log), false, 'the check a route runs for a new socket')
  writeDirect(p.server, Buffer.from('a'), log)
  writeDirect(p.server, Buffer.from('b'))
  t.equal(p.streamWrites(), 2)
  t.equal(lines.length, 1, 'logged once')
  t.match(lines[0], { obj: { adapter: 'net-write', reason: /_writeGeneric/ }, msg: /net-write: .*public API/ })
  await waitFor(() => p.received().toString() === 'ab')
})
