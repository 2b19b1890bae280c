import t from 'tap'
import { WebSocket } from 'ws'
import { addCita, addNegocio, listeningPort, runServer, SECRET, serviceToken, sign, testDatabase, waitFor } from '../helper.js'
import { FILES_RESERVED } from '../../services/http/limits.js'

// A process offered more clients than its open-files limit allows keeps files for its database
// pool and bus: it refuses the excess, and every client it accepted keeps getting its updates.

const NOFILE = 1200
const OFFERED = 1500
const METRICS_TOKEN = 'metrics-token-0123456789abcdef'

t.test(`offered ${OFFERED} clients under a limit of ${NOFILE} files, it refuses the excess and serves the rest`, async (t) => {
  const db = await testDatabase(t)
  await addNegocio(db.pool, 'n1')
  const p = runServer({ DATABASE_URL: db.url, JWT_SECRET: SECRET, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info', METRICS_TOKEN, WS_MAX_CONNECTIONS_PER_USER: '0' }, { nofile: NOFILE })
  t.teardown(() => { p.child.kill('SIGKILL') })
  const port = await listeningPort(p)
  if (port === 0) throw new Error(`the server did not start:\n${p.output()}`)

  const token = sign({ sub: 'u', negocio_id: 'n1' })
  const accepted: WebSocket[] = []
  const received = new Map<WebSocket, number>()
  const refusals: Record<string, number> = {}
  t.teardown(() => { for (const ws of accepted) ws.terminate() })
  // In waves, as a crowd reconnecting after a deploy would come.
  for (let wave = 0; wave < OFFERED; wave += 100) {
    await Promise.all(Array.from({ length: Math.min(100, OFFERED - wave) }, async () => await new Promise<void>((resolve) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/ws?token=${token}`)
      ws.on('message', (data) => {
        const m = JSON.parse(data.toString()) as { type: string, data: { total_citas?: number } }
        if (m.type === 'stats') received.set(ws, m.data.total_citas ?? -1)
        if (m.type === 'stats' && !accepted.includes(ws)) { accepted.push(ws); resolve() }
      })
      ws.on('open', () => { ws.send(JSON.stringify({ type: 'subscribe', data: { channel: 'estadisticas:n1' } })) })
      ws.on('unexpected-response', (_req, res) => {
        const key = `${res.statusCode ?? 0}${res.headers['retry-after'] !== undefined ? ' with Retry-After' : ''}`
        refusals[key] = (refusals[key] ?? 0) + 1
        res.resume()
        resolve()
      })
      ws.on('error', () => {
        refusals.cut = (refusals.cut ?? 0) + 1
        resolve()
      })
    })))
  }
  const capacity = NOFILE - FILES_RESERVED
  t.ok(accepted.length > 0 && accepted.length <= capacity, `accepted ${accepted.length} (at most ${capacity}); refused: ${JSON.stringify(refusals)}`)
  t.ok((refusals['503 with Retry-After'] ?? 0) > 0, 'the first ones past the capacity get a 503 with Retry-After')
  t.equal(accepted.length + Object.values(refusals).reduce((a, b) => a + b, 0), OFFERED, 'every client got an answer')

  // The database is still reachable: a write reaches every accepted client, a notify is answered.
  await addCita(db.pool, 'n1', new Date())
  await waitFor(() => accepted.every(ws => received.get(ws) === 1), 30_000)
  t.pass(`all ${accepted.length} accepted clients got the update`)
  const res = await fetch(`http://127.0.0.1:${port}/notify/cita`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${serviceToken()}` },
    body: JSON.stringify({ negocio_id: 'n1', action: 'created' })
  })
  t.equal(res.status, 200, 'a notify is answered')
  const ready = await fetch(`http://127.0.0.1:${port}/ready`)
  t.equal(ready.status, 200)
  const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } })).text()
  t.match(metrics, new RegExp(`citas_live_connections\\{transport="websocket"\\} ${accepted.length}\\n`))
  t.match(metrics, /citas_live_connections_refused_total\{reason="capacity"\} [1-9]/)
})
