import t from 'tap'
import net from 'node:net'
import { build, listen, waitFor } from '../helper.js'

/** Sends the head of a request that announces a large body and trickles a little of it. */
async function slowUpload (port: number, head: string): Promise<{ response: Promise<string>, closed: Promise<void>, socket: net.Socket }> {
  const socket = net.connect(port, '127.0.0.1')
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
  let received = ''
  const response = new Promise<string>(resolve => {
    socket.on('data', (d: Buffer) => { received += d.toString(); if (received.includes('\r\n\r\n')) resolve(received) })
  })
  const closed = new Promise<void>(resolve => socket.once('close', () => resolve()))
  socket.on('error', () => {})
  socket.write(`${head}\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 1000000\r\n\r\n{"negocio_id":`)
  return { response, closed, socket }
}

t.test('a refused request with a body still coming ends its connection instead of waiting for the body', async (t) => {
  const { app } = await build(t)
  const { port } = await listen(app)
  const anonymous = await slowUpload(port, 'POST /notify/cita HTTP/1.1')
  t.teardown(() => anonymous.socket.destroy())
  t.match(await anonymous.response, /^HTTP\/1\.1 401 [\s\S]*connection: close/i, '401 at once, and the connection is ending')
  let closed = false
  void anonymous.closed.then(() => { closed = true })
  await waitFor(() => closed)
  t.ok(closed, 'the server closed it without reading the announced megabyte')
})
