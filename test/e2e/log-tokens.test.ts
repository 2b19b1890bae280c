import t, { type Test } from 'tap'
import Fastify from 'fastify'
import { Writable } from 'node:stream'
import citasLive from '../../app.js'
import { requestForLog, scrubbingStream } from '../../services/http/redact.js'
import { handshake, JWT_SHAPE, listeningPort, runServer, SECRET, serviceToken, sign, testDatabase } from '../helper.js'

/** Requests a token holder might send to the wrong place or in an odd spelling; `routed`: a citas-live route answers it. */
function tokenRequests (prefix: string, token: string): Array<{ method: string, url: string, headers?: Record<string, string>, routed: boolean }> {
  return [
    { method: 'GET', url: `${prefix}/ws?token=${token}`, routed: true },
    { method: 'GET', url: `${prefix}/ws?%74oken=${token}`, routed: true },
    { method: 'GET', url: `${prefix}/ws?TOKEN=${token}&x=1`, routed: true },
    { method: 'POST', url: `${prefix}/notify/cita?token=${token}`, routed: true },
    { method: 'GET', url: `${prefix}/ready?token=${token}`, routed: true },
    { method: 'GET', url: `${prefix}/ws/?token=${token}`, routed: false },
    { method: 'POST', url: `${prefix}/ws?token=${token}`, routed: false },
    { method: 'GET', url: `${prefix}/wss?token=${token}`, routed: false },
    { method: 'GET', url: `${prefix}/ws/${token}`, routed: false },
    { method: 'GET', url: `${prefix}/nope`, headers: { authorization: `Bearer ${token}` }, routed: false }
  ]
}

async function embedded (t: Test, requests: ReturnType<typeof tokenRequests>, redacting = false): Promise<string[]> {
  const db = await testDatabase(t)
  const lines: string[] = []
  const stream = new Writable({ write (chunk: Buffer, _enc, done) { lines.push(chunk.toString()); done() } })
  const host = Fastify({
    logger: redacting
      ? { level: 'trace', stream: scrubbingStream(stream), serializers: { req: requestForLog } }
      : { level: 'trace', stream }
  })
  await host.register(citasLive, { prefix: '/live', db: { connectionString: db.url }, auth: { secret: SECRET }, dashboard: false })
  t.teardown(() => host.close())
  await host.listen({ port: 0, host: '127.0.0.1' })
  const { port } = host.server.address() as { port: number }
  const token = sign({ sub: 'u1', negocio_id: 'n1' })
  for (const r of requests) {
    const res = await host.inject({ method: r.method as 'GET', url: r.url, ...(r.headers !== undefined ? { headers: r.headers } : {}) })
    t.ok(res.statusCode >= 200, `${r.method} ${r.url.slice(0, 24)} answered ${res.statusCode}`)
  }
  t.equal((await handshake(`ws://127.0.0.1:${port}/live/ws?token=${token}`)).status, 101, 'a real upgrade')
  t.equal((await handshake(`ws://127.0.0.1:${port}/live/ws`, {}, ['bearer', serviceToken()])).status, 101, 'a token in the subprotocol')
  await host.close()
  t.ok(lines.length > 10, `${lines.length} log lines written`)
  return lines
}

t.test('embedded in a host whose logger has no redaction: requests to its routes log no token', async (t) => {
  const token = sign({ sub: 'u1', negocio_id: 'n1' })
  // Only what citas-live routes: a 404's "incoming request" line is the host logger's, written before any route runs.
  const ours = tokenRequests('/live', token).filter(r => r.routed)
  const lines = await embedded(t, ours)
  t.same(lines.filter(l => JWT_SHAPE.test(l)), [], 'none of them holds anything shaped like a JWT')
})

t.test('embedded in a host that uses the exported serializer and scrubbing stream: no request at all logs a token', async (t) => {
  const token = sign({ sub: 'u1', negocio_id: 'n1' })
  const lines = await embedded(t, [...tokenRequests('/live', token), ...tokenRequests('', token)], true)
  t.same(lines.filter(l => JWT_SHAPE.test(l)), [], 'none of them holds anything shaped like a JWT')
})

t.test('the server process: no request, whatever its path, method or spelling, logs a token', async (t) => {
  const db = await testDatabase(t)
  const p = runServer({ DATABASE_URL: db.url, JWT_SECRET: SECRET, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'trace' })
  t.teardown(() => { p.child.kill('SIGKILL') })
  const port = await listeningPort(p)
  t.not(port, 0, 'listening')
  const token = sign({ sub: 'u1', negocio_id: 'n1' })
  for (const r of tokenRequests('', token)) {
    const res = await fetch(`http://127.0.0.1:${port}${r.url}`, { method: r.method, ...(r.headers !== undefined ? { headers: r.headers } : {}) })
    t.ok(res.status >= 200, `${r.method} ${r.url.slice(0, 24)} answered ${res.status}`)
    await res.arrayBuffer()
  }
  t.equal((await handshake(`ws://127.0.0.1:${port}/ws?token=${token}`)).status, 101, 'a real upgrade')
  t.equal((await handshake(`ws://127.0.0.1:${port}/ws`, {}, ['bearer', serviceToken()])).status, 101, 'a token in the subprotocol')
  const bad = sign({ sub: 'u1' }, { secret: 'another-secret-0123456789abcdef' })
  t.equal((await handshake(`ws://127.0.0.1:${port}/ws?token=${bad}`)).status, 401, 'a refused token')
  p.child.kill('SIGTERM')
  t.equal(await p.exited, 0)
  const lines = p.output().split('\n').filter(l => l.startsWith('{'))
  t.ok(lines.length > 20, `${lines.length} log lines written`)
  t.same(lines.filter(l => JWT_SHAPE.test(l)), [], 'none of them holds anything shaped like a JWT')
  t.ok(lines.some(l => l.includes('not found')), 'the 404 lines are there, scrubbed')
})
