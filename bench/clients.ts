import http from 'node:http'
import WebSocket from 'ws'
import { now, sleep, until } from './lib.js'

/**
 * What the load generator knows about one channel: the total_citas its subscribers started from
 * and, for each change made since, when the change was made. Change i (0-based) is the one that
 * made total_citas = base + i + 1, so a stats message is matched to the changes it reflects.
 */
export interface Channel {
  negocio: string
  base: number
  changedAt: number[]
}

/** One dashboard, over either transport: the channel it follows and the last total_citas it saw. */
export interface Subscriber {
  channel: Channel
  /** total_citas of the last stats message; -1 before the first. */
  last: number
  /** When the connect started and when the first stats arrived (ms, performance.now()). */
  startedAt: number
  readyAt: number
  failed: boolean
  /** Cuts the connection. */
  close: () => void
  isClosed: () => boolean
}

/** A dashboard on a WebSocket. */
export interface Client extends Subscriber {
  ws: WebSocket
}

/** Counters every client feeds; reset between phases of a scenario. */
export class Tracker {
  /** change-to-delivery latencies, ms: one per (client, change) pair that arrived. */
  latencies: number[] = []
  /** stats messages after each client's first. */
  deliveries = 0
  /** stats messages that brought nothing new (same or older total). */
  stale = 0
  errors = 0
  ready = 0
  /**
   * Changes a stats message reflected before the load generator had recorded them (their time is
   * taken when the write's promise resolves, and the message beat it): delivered, with no latency.
   */
  early = 0
  /** When the last stats message after a client's first arrived. */
  lastAt = 0
  closedEarly = 0

  reset (): void {
    this.latencies = []
    this.deliveries = 0
    this.stale = 0
    this.early = 0
    this.lastAt = 0
  }

  onStats (client: Subscriber, total: number): void {
    const t = now()
    if (client.last < 0) {
      client.last = total
      client.readyAt = t
      this.ready++
      return
    }
    this.deliveries++
    this.lastAt = t
    if (total <= client.last) {
      this.stale++
      return
    }
    const ch = client.channel
    for (let k = client.last + 1; k <= total; k++) {
      const at = ch.changedAt[k - ch.base - 1]
      if (at !== undefined) this.latencies.push(t - at)
      else if (k - ch.base - 1 >= 0) this.early++
    }
    client.last = total
  }
}

export interface ConnectOptions {
  port: number
  /** Token per client (citas-live verifies it; the baseline ignores it). */
  tokens: string[]
  channels: Channel[]
  /** Connects in flight at once; Infinity = all at once (a storm). */
  concurrency: number
  timeoutMs: number
  tracker: Tracker
}

function open (port: number, token: string, channel: Channel, tracker: Tracker): Client {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws?token=${token}`, { perMessageDeflate: false })
  const client: Client = {
    ws,
    channel,
    last: -1,
    startedAt: now(),
    readyAt: 0,
    failed: false,
    close: () => ws.terminate(),
    isClosed: () => ws.readyState === WebSocket.CLOSED
  }
  ws.on('open', () => {
    ws.send(`{"type":"subscribe","data":{"channel":"estadisticas:${channel.negocio}"}}`)
  })
  ws.on('message', (data: Buffer) => {
    const msg = JSON.parse(data.toString()) as { type: string, data: { total_citas: number } }
    if (msg.type === 'stats') tracker.onStats(client, msg.data.total_citas)
    else if (msg.type === 'error') tracker.errors++
  })
  ws.on('error', () => { client.failed = true })
  ws.on('close', () => {
    if (client.last < 0) client.failed = true
    else tracker.closedEarly++
  })
  return client
}

/**
 * A dashboard on Server-Sent Events: GET /sse?channels=estadisticas:<id> with the token as
 * `Authorization: Bearer`, counting `event: stats` events (their `data:` is the stats object).
 */
export function openSse (port: number, token: string, channel: Channel, tracker: Tracker): Subscriber {
  let closed = false
  const req = http.get({
    host: '127.0.0.1',
    port,
    path: `/sse?channels=estadisticas:${channel.negocio}`,
    agent: false,
    headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' }
  })
  const client: Subscriber = {
    channel,
    last: -1,
    startedAt: now(),
    readyAt: 0,
    failed: false,
    close: () => req.destroy(),
    isClosed: () => closed
  }
  req.on('response', (res) => {
    if (res.statusCode !== 200) {
      client.failed = true
      res.resume()
      return
    }
    res.setEncoding('utf8')
    let buffered = ''
    res.on('data', (chunk: string) => {
      buffered += chunk
      let end: number
      while ((end = buffered.indexOf('\n\n')) !== -1) {
        const event = buffered.slice(0, end)
        buffered = buffered.slice(end + 2)
        if (!event.startsWith('event: stats\n')) continue
        const data = event.slice(event.indexOf('\ndata: ') + 7)
        tracker.onStats(client, (JSON.parse(data) as { total_citas: number }).total_citas)
      }
    })
  })
  req.on('error', () => { client.failed = true })
  req.on('close', () => {
    closed = true
    if (client.last < 0) client.failed = true
    else tracker.closedEarly++
  })
  return client
}

/**
 * Opens one socket per token, each subscribing to its channel, and resolves once every one has
 * its first stats (or failed, or the time is up). Returns the clients and the wall time in ms.
 */
export async function connectAll (opts: ConnectOptions): Promise<{ clients: Client[], ms: number, failed: number }> {
  return await connectWith(opts, open)
}

/** connectAll with another kind of client (openSse). */
export async function connectWith<C extends Subscriber> (opts: ConnectOptions, openOne: (port: number, token: string, channel: Channel, tracker: Tracker) => C): Promise<{ clients: C[], ms: number, failed: number }> {
  const { tokens, channels, tracker } = opts
  const clients: C[] = []
  const start = now()
  const end = Date.now() + opts.timeoutMs
  const settled = (c: Subscriber): boolean => c.last >= 0 || c.failed
  let i = 0
  let pending: C[] = []
  while (i < tokens.length && Date.now() < end) {
    pending = pending.filter((c) => !settled(c))
    while (pending.length < opts.concurrency && i < tokens.length) {
      const c = openOne(opts.port, tokens[i] as string, channels[i % channels.length] as Channel, tracker)
      clients.push(c)
      pending.push(c)
      i++
    }
    if (i < tokens.length) await sleep(1)
  }
  await until(() => clients.every(settled), Math.max(0, end - Date.now()), 5)
  const ms = now() - start
  return { clients, ms, failed: clients.filter((c) => !settled(c) || c.failed).length }
}

/** Closes every client and waits until their sockets are closed. */
export async function closeAll (clients: Subscriber[], timeoutMs = 30_000): Promise<void> {
  for (const c of clients) c.close()
  await until(() => clients.every((c) => c.isClosed()), timeoutMs)
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 256 })

/** POST /notify/cita; resolves with the status code (0 on a network error). */
export async function notify (port: number, token: string, negocio: string): Promise<number> {
  const body = `{"negocio_id":"${negocio}","action":"created"}`
  return await new Promise<number>((resolve) => {
    const req = http.request({
      host: '127.0.0.1',
      port,
      path: '/notify/cita',
      method: 'POST',
      agent,
      timeout: 30_000,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), authorization: `Bearer ${token}` }
    }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', () => resolve(0))
    req.on('timeout', () => req.destroy())
    req.end(body)
  })
}
