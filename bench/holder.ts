/**
 * A load generator process that holds many WebSocket subscribers (one process holds at most what its
 * open-files limit allows, so the scale-out scenarios fork several, each from a source address of its
 * own: one address gives about 28,000 ephemeral ports towards one server port).
 *
 * Messages from the orchestrator: `open` (connect `count` sockets subscribed to one negocio, answer
 * once each has its first stats or was refused), `expect` (answer once every accepted socket saw a
 * total_citas of at least `total`, or the time is up), `close`.
 */
import WebSocket from 'ws'
import { sleep, until } from './lib.js'

export type HolderRequest =
  | { type: 'open', url: string, negocio: string, count: number, localAddress: string, concurrency: number, timeoutMs: number }
  | { type: 'expect', total: number, timeoutMs: number }
  | { type: 'close' }

export interface HolderOpened { type: 'opened', accepted: number, refused: Record<string, number>, ms: number }
export interface HolderReached { type: 'reached', reached: number, accepted: number, ms: number }
export type HolderReply = HolderOpened | HolderReached | { type: 'closed' }

interface Held { ws: WebSocket, last: number, settled: boolean }

const held: Held[] = []
const send = (reply: HolderReply): void => { process.send?.(reply) }

async function open (req: Extract<HolderRequest, { type: 'open' }>): Promise<void> {
  const refused: Record<string, number> = {}
  const started = performance.now()
  const end = Date.now() + req.timeoutMs
  let inFlight = 0
  const all: Held[] = []
  for (let i = 0; i < req.count && Date.now() < end; i++) {
    while (inFlight >= req.concurrency && Date.now() < end) await sleep(1)
    inFlight++
    const h: Held = { ws: new WebSocket(req.url, { perMessageDeflate: false, localAddress: req.localAddress }), last: -1, settled: false }
    all.push(h)
    const settle = (): void => {
      if (h.settled) return
      h.settled = true
      inFlight--
    }
    h.ws.on('open', () => { h.ws.send(`{"type":"subscribe","data":{"channel":"estadisticas:${req.negocio}"}}`) })
    h.ws.on('message', (data: Buffer) => {
      const m = JSON.parse(data.toString()) as { type: string, data?: { total_citas?: number } }
      if (m.type !== 'stats') return
      h.last = m.data?.total_citas ?? -1
      settle()
    })
    h.ws.on('unexpected-response', (_req, res) => {
      const key = String(res.statusCode)
      refused[key] = (refused[key] ?? 0) + 1
      res.resume()
      settle()
    })
    h.ws.on('error', (err: NodeJS.ErrnoException) => {
      if (!h.settled) refused[err.code ?? 'error'] = (refused[err.code ?? 'error'] ?? 0) + 1
      settle()
    })
    h.ws.on('close', settle)
  }
  await until(() => all.every((h) => h.settled), Math.max(0, end - Date.now()), 20)
  for (const h of all) if (h.last >= 0 && h.ws.readyState === WebSocket.OPEN) held.push(h)
  send({ type: 'opened', accepted: held.length, refused, ms: performance.now() - started })
}

process.on('message', (req: HolderRequest) => {
  if (req.type === 'open') {
    open(req).catch((err: unknown) => { process.stderr.write(`holder: ${String(err)}\n`); process.exit(1) })
  } else if (req.type === 'expect') {
    const started = performance.now()
    const reached = (): number => held.filter((h) => h.last >= req.total).length
    until(() => reached() === held.length, req.timeoutMs, 20).then(() => {
      send({ type: 'reached', reached: reached(), accepted: held.length, ms: performance.now() - started })
    }, () => {})
  } else {
    for (const h of held) h.ws.terminate()
    send({ type: 'closed' })
    setTimeout(() => process.exit(0), 100)
  }
})
process.on('disconnect', () => process.exit(0))
