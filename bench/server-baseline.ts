/**
 * The plain-ws baseline: the same protocol subset a dashboard uses (subscribe, subscribed, stats,
 * ping/pong and POST /notify/cita) written as a Node engineer would write a broadcast server with
 * `ws` alone: one http server, a WebSocketServer, a Map of channel -> Set of sockets, and each
 * broadcast serialized and encoded to UTF-8 once, the same Buffer handed to every subscriber with
 * ws.send(buffer, { binary: false }). It runs the same stats SQL as citas-live for every notify
 * (the notify names the negocio, not its figures), with no coalescing and no cache beyond the last
 * stats message per channel. It authenticates as any server for this job must, with the fastest
 * maintained JWT library (fast-jwt, HS256, the same secret): the token of every WebSocket upgrade
 * (`?token=`, in ws's verifyClient) and of every notify (`Authorization: Bearer`, role `service`);
 * a subscribe is allowed for the negocios the token names. No cache of verified tokens: that is
 * one of citas-live's own optimizations, which the ratios price.
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import pg from 'pg'
import { WebSocketServer, type WebSocket } from 'ws'
import { createVerifier } from 'fast-jwt'
import { STATS_SQL } from '../services/live/stats.js'
import { serveIpc } from './ipc.js'

interface Claims { negocio_id?: unknown, negocios?: unknown, role?: unknown }
const verify = createVerifier({ key: process.env.JWT_SECRET as string, algorithms: ['HS256'] }) as (token: string) => Claims
/** The verified claims of each socket, set by verifyClient on its upgrade request. */
const claimsOf = new WeakMap<http.IncomingMessage, Claims>()

function allows (claims: Claims, negocioId: string): boolean {
  return claims.negocio_id === negocioId || (Array.isArray(claims.negocios) && claims.negocios.includes(negocioId))
}

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 10 })
const channels = new Map<string, Set<WebSocket>>()
const last = new Map<string, Buffer>()
let queries = 0
/** A Buffer goes out as a text frame, as the string did, without being encoded again per socket. */
const TEXT = { binary: false }

async function stats (negocioId: string): Promise<Buffer | null> {
  queries++
  const { rows } = await pool.query(STATS_SQL, [[negocioId], 'UTC', new Date().toISOString()])
  const row = rows[0]
  if (row === undefined || row.negocio_id === null) return null
  const message = Buffer.from(JSON.stringify({
    type: 'stats',
    data: {
      negocio_id: row.negocio_id,
      citas_hoy: row.citas_hoy,
      total_citas: row.total_citas,
      citas_completadas: row.citas_completadas,
      citas_canceladas: row.citas_canceladas,
      timestamp: Math.floor(Date.now() / 1000)
    }
  }))
  last.set(negocioId, message)
  return message
}

const server = http.createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/notify/cita') {
    res.writeHead(404).end()
    return
  }
  try {
    if (verify(/^Bearer (\S+)$/.exec(req.headers.authorization ?? '')?.[1] ?? '').role !== 'service') throw new Error('not a service token')
  } catch {
    res.writeHead(401).end()
    return
  }
  let body = ''
  req.setEncoding('utf8')
  req.on('data', (chunk: string) => { body += chunk })
  req.on('end', () => {
    let negocioId: string
    try {
      negocioId = String((JSON.parse(body) as { negocio_id: unknown }).negocio_id)
    } catch {
      res.writeHead(400).end()
      return
    }
    stats(negocioId).then((message) => {
      if (message === null) {
        res.writeHead(404).end()
        return
      }
      let delivered = 0
      for (const ws of channels.get(`estadisticas:${negocioId}`) ?? []) {
        ws.send(message, TEXT)
        delivered++
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ ok: true, delivered }))
    }, () => { res.writeHead(500).end() })
  })
})

const wss = new WebSocketServer({
  server,
  path: '/ws',
  maxPayload: 4096,
  verifyClient: ({ req }: { req: http.IncomingMessage }) => {
    try {
      claimsOf.set(req, verify(new URL(req.url ?? '', 'http://localhost').searchParams.get('token') ?? ''))
      return true
    } catch {
      return false
    }
  }
})
const alive = new WeakSet<WebSocket>()

wss.on('connection', (ws, req) => {
  const claims = claimsOf.get(req) as Claims
  const mine = new Set<string>()
  alive.add(ws)
  ws.on('pong', () => alive.add(ws))
  ws.on('error', () => ws.terminate())
  ws.on('message', (data) => {
    let msg: { type?: string, data?: { channel?: string } }
    try {
      msg = JSON.parse(data.toString()) as typeof msg
    } catch {
      return
    }
    if (msg.type === 'ping') {
      ws.send('{"type":"pong"}')
      return
    }
    if (msg.type !== 'subscribe' || typeof msg.data?.channel !== 'string') return
    const channel = msg.data.channel
    const negocioId = channel.slice('estadisticas:'.length)
    if (!allows(claims, negocioId)) {
      ws.send(JSON.stringify({ type: 'error', data: { code: 'forbidden', message: `your token does not allow ${channel}` } }))
      return
    }
    let set = channels.get(channel)
    if (set === undefined) channels.set(channel, set = new Set())
    set.add(ws)
    mine.add(channel)
    ws.send(JSON.stringify({ type: 'subscribed', data: { channel } }))
    const cached = last.get(negocioId)
    if (cached !== undefined) {
      ws.send(cached, TEXT)
      return
    }
    stats(negocioId).then((message) => { if (message !== null) ws.send(message, TEXT) }, () => {})
  })
  ws.on('close', () => {
    for (const channel of mine) {
      const set = channels.get(channel)
      set?.delete(ws)
      if (set?.size === 0) {
        channels.delete(channel)
        last.delete(channel.slice('estadisticas:'.length))
      }
    }
  })
})

// One heartbeat timer for all sockets, as in the ws README.
const heartbeat = setInterval(() => {
  for (const ws of wss.clients) {
    if (!alive.has(ws)) {
      ws.terminate()
      continue
    }
    alive.delete(ws)
    ws.ping()
  }
}, 30_000)

server.listen(0, '127.0.0.1', () => {
  serveIpc(
    () => ({ queries, connections: wss.clients.size }),
    async () => {
      clearInterval(heartbeat)
      for (const ws of wss.clients) ws.terminate()
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await pool.end()
    }
  )
  process.send?.({ type: 'ready', port: (server.address() as AddressInfo).port })
})
