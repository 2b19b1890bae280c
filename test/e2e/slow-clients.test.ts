import t, { type Test } from 'tap'
import net from 'node:net'
import { runServer, SECRET, serviceToken, sign, SseClient, testDatabase, waitFor, WAIT_MS, type ServerProcess } from '../helper.js'

// Slow and never-finishing requests against the real process, with its default timeouts unless said.
t.setTimeout(180_000)

async function start (t: Test, env: Record<string, string> = {}): Promise<{ p: ServerProcess, port: number }> {
  const db = await testDatabase(t)
  const p = runServer({ DATABASE_URL: db.url, JWT_SECRET: SECRET, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info', ...env })
  t.teardown(() => { p.child.kill('SIGKILL') })
  let port = 0
  await waitFor(() => {
    port = Number(/"port":(\d+)|listening at http:\/\/127\.0\.0\.1:(\d+)/.exec(p.output())?.slice(1).find(Boolean) ?? 0)
    return port !== 0 || p.child.exitCode !== null
  }, 30_000)
  if (port === 0) throw new Error(`server did not start:\n${p.output()}`)
  return { p, port }
}

/** A connection that sends `head` and then nothing more; resolves once connected. */
async function stuck (port: number, head: string): Promise<{ socket: net.Socket, closed: Promise<void> }> {
  const socket = net.connect(port, '127.0.0.1')
  socket.on('error', () => {})
  socket.on('data', () => {})
  const closed = new Promise<void>(resolve => socket.once('close', () => resolve()))
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
  socket.write(head)
  return { socket, closed }
}

const slowNotify = (token?: string): string =>
  'POST /notify/cita HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000000\r\n' +
  `${token !== undefined ? `authorization: Bearer ${token}\r\n` : ''}\r\n{"negocio_id":"n1",`

t.test('4,000 slow clients: /health still answers at once and every one of them is closed within 30 s', async (t) => {
  const { port } = await start(t)
  const svc = serviceToken()
  const heads = [
    slowNotify(), // anonymous upload: refused, and closed without reading the body
    slowNotify(svc), // authenticated upload that never finishes: the request timeout
    'GET /health HTTP/1.1\r\nhost: x\r\nx-slow: ', // headers that never end
    'POST /health HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\nx' // a body to a route without one
  ]
  const conns: Array<{ socket: net.Socket, closed: Promise<void> }> = []
  t.teardown(() => { for (const c of conns) c.socket.destroy() })
  for (let i = 0; i < 4000; i += 100) {
    conns.push(...await Promise.all(Array.from({ length: 100 }, async (_, j) => await stuck(port, heads[(i + j) % heads.length] as string))))
  }
  const health = await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(WAIT_MS) })
  t.equal(health.status, 200, `/health answers with ${conns.length} slow connections open`)
  let open = conns.length
  for (const c of conns) void c.closed.then(() => { open-- })
  await waitFor(() => open === 0, 30_000).catch(() => {})
  const left = heads.map((h, k) => conns.filter((c, i) => i % heads.length === k && !c.socket.destroyed && c.socket.readyState !== 'closed').length)
  t.same(left, heads.map(() => 0), 'open per kind')
  t.equal(open, 0, 'every slow connection was closed by the server')
})

t.test('SIGTERM with an upload still arriving exits 0 within the grace period', async (t) => {
  // A request timeout longer than the grace, so only the shutdown can end the upload.
  const { p, port } = await start(t, { SHUTDOWN_GRACE_MS: '3000', HTTP_REQUEST_TIMEOUT_MS: '600000' })
  // Both trickle a byte every 100 ms: alive, just slow. One was refused (401), one is authenticated.
  const uploads = [await stuck(port, slowNotify()), await stuck(port, slowNotify(serviceToken()))]
  const trickle = setInterval(() => { for (const u of uploads) if (!u.socket.destroyed) u.socket.write(' ') }, 100)
  t.teardown(() => { clearInterval(trickle); for (const u of uploads) u.socket.destroy() })
  p.child.kill('SIGTERM')
  // Past the grace, close-with-grace would end the process with code 1 and say "killed by timeout".
  t.equal(await p.exited, 0, 'exit code 0')
  t.notMatch(p.output(), /killed by timeout/, 'within the grace')
  await Promise.all(uploads.map(async u => await u.closed))
})

t.test('an event stream outlives the request timeout: it bounds receiving a request, not a response', async (t) => {
  const { port } = await start(t, { HTTP_REQUEST_TIMEOUT_MS: '300', SSE_HEARTBEAT_MS: '100', SHUTDOWN_GRACE_MS: '1000' })
  const stream = await SseClient.open(`http://127.0.0.1:${port}/sse?channels=estadisticas:n1`, t, { authorization: `Bearer ${sign({ negocio_id: 'n1' })}` })
  t.equal(stream.status, 200)
  // Twenty heartbeats: two seconds, more than six request timeouts (checked every second).
  await waitFor(() => stream.comments >= 20)
  t.equal(stream.response.destroyed, false, `open after ${stream.comments} heartbeats`)
})
