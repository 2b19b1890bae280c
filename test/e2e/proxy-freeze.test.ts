import t from 'tap'
import net from 'node:net'
import type { AddressInfo } from 'node:net'
import { tcpProxy } from '../fixtures/proxy.js'
import { waitFor } from '../helper.js'

// The proxy fixture the blackhole tests rely on: freezeExisting() stops the flows open now and
// only those, without closing them, and cutFrozen() closes only those.

async function echoServer (): Promise<net.Server> {
  const server = net.createServer(socket => {
    socket.on('data', d => socket.write(d))
    socket.on('error', () => {})
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return server
}

async function connection (port: number): Promise<{ socket: net.Socket, received: () => string, closed: () => boolean }> {
  const socket = net.connect(port, '127.0.0.1')
  let received = ''
  let closed = false
  socket.on('data', (d: Buffer) => { received += d.toString() })
  socket.on('close', () => { closed = true })
  socket.on('error', () => {})
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
  return { socket, received: () => received, closed: () => closed }
}

t.test('freezeExisting() blackholes the open connections only; new ones pass; cutFrozen() closes the frozen ones', async (t) => {
  const echo = await echoServer()
  t.teardown(() => echo.close())
  const proxy = await tcpProxy({ host: '127.0.0.1', port: (echo.address() as AddressInfo).port })
  t.teardown(() => proxy.close())

  const old = await connection(proxy.port)
  t.teardown(() => old.socket.destroy())
  old.socket.write('before')
  await waitFor(() => old.received() === 'before')
  t.equal(proxy.upstreamPorts().carrying.length, 1, 'one flow carries')

  t.equal(proxy.freezeExisting(), 1, 'one flow frozen')
  t.match(proxy.upstreamPorts(), { carrying: [], frozen: [Number] }, 'its upstream port is listed as frozen')
  old.socket.write('lost')
  const fresh = await connection(proxy.port)
  t.teardown(() => fresh.socket.destroy())
  // Two round trips on the new flow: the proxy has handled the frozen flow's bytes by then.
  fresh.socket.write('one')
  await waitFor(() => fresh.received() === 'one')
  fresh.socket.write('two')
  await waitFor(() => fresh.received() === 'onetwo')
  t.equal(old.received(), 'before', 'nothing comes back on the frozen flow')
  t.notOk(proxy.sent().includes('lost'), 'and nothing it sent went through')
  t.notOk(old.closed(), 'it is not closed either')
  t.equal(proxy.upstreamPorts().carrying.length, 1, 'the new flow carries')

  proxy.cutFrozen()
  await waitFor(() => old.closed())
  t.notOk(fresh.closed(), 'the new flow stays')
  fresh.socket.write('three')
  await waitFor(() => fresh.received() === 'onetwothree')
  t.same(proxy.upstreamPorts().frozen, [], 'no frozen flow is left')
})
