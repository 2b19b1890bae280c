import net from 'node:net'
import pg from 'pg'
import { reconnectDelay, RECONNECT_MAX_MS, RECONNECT_MIN_MS } from './reconnect.js'

export interface PgSessionOptions {
  /** Connection settings of the dedicated session (never a pooled one: LISTEN and session locks are per session). */
  connection: pg.ClientConfig
  /** Channels to LISTEN on; may be empty. */
  channels: readonly string[]
  onNotification?: (channel: string, payload: string) => void
  /** After every (re)connect, once the LISTENs are in place; `first` on the first one only. */
  onConnect?: (first: boolean) => void
  /** When the connection is lost (closed, reset, or declared dead by a deadline). */
  onLost?: (err: unknown) => void
  /**
   * A query is run at least this often (the caller's `heartbeat`, else `SELECT 1`), so a connection
   * that stopped carrying packets without closing is noticed. Default 5 s.
   */
  heartbeatMs?: number
  heartbeat?: () => Promise<unknown>
  /** A query not answered within this is taken for a dead connection: the socket is destroyed. Default 5 s. */
  deadlineMs?: number
  /** Backoff between reconnect attempts, in ms (services/reconnect.ts; defaults 100 and 1000). */
  minDelayMs?: number
  maxDelayMs?: number
}

export class SessionDownError extends Error {
  constructor () {
    super('the database session is not connected')
    this.name = 'SessionDownError'
  }
}

/**
 * One dedicated PostgreSQL connection: it LISTENs on a few channels, runs the session queries
 * others give it (change capture, leader lock), and comes back by itself with backoff and jitter
 * after the server restarts or kills it. A NAT or firewall can drop a connection without closing it,
 * and the OS notices only hours later; so a query runs at least every `heartbeatMs`, and a query
 * that gets no answer within `deadlineMs` destroys the socket and starts over.
 */
export function createPgSession (opts: PgSessionOptions) {
  const backoff = { minMs: opts.minDelayMs ?? RECONNECT_MIN_MS, maxMs: opts.maxDelayMs ?? RECONNECT_MAX_MS }
  const heartbeatMs = opts.heartbeatMs ?? 5000
  const deadlineMs = opts.deadlineMs ?? 5000
  let client: pg.Client | undefined
  let socket: net.Socket | undefined
  let attempt = 0
  let everConnected = false
  let closed = false
  let timer: NodeJS.Timeout | undefined
  let heartbeatTimer: NodeJS.Timeout | undefined
  let reconnects = 0
  let deadlines = 0
  let connected = false
  let lastAnswer = 0
  let firstAttempt: Promise<void> | undefined
  /** Settles when the last query given to query() has. */
  let queue: Promise<void> = Promise.resolve()

  /** Declares the connection dead: pg then fails every pending query and reports the loss. */
  function kill (): void {
    socket?.destroy(new Error(`the database session did not answer within ${deadlineMs} ms`))
  }

  async function withDeadline<T> (work: Promise<T>): Promise<T> {
    let deadline: NodeJS.Timeout | undefined
    const expired = new Promise<never>((_resolve, reject) => {
      deadline = setTimeout(() => {
        deadlines++
        kill()
        reject(new Error(`the database session did not answer within ${deadlineMs} ms`))
      }, deadlineMs)
    })
    try {
      const result = await Promise.race([work, expired])
      lastAnswer = Date.now()
      return result
    } finally {
      clearTimeout(deadline)
    }
  }

  async function connect (): Promise<void> {
    if (closed) return
    // The socket is made here so that it can be destroyed (pg offers no public way to drop a connection).
    const c = new pg.Client({
      ...opts.connection,
      keepAlive: true,
      application_name: 'citas-live-listener',
      stream: () => {
        socket = new net.Socket()
        return socket
      }
    })
    client = c
    let lost = false
    const onLost = (err?: unknown): void => {
      if (lost) return
      lost = true
      connected = false
      stopHeartbeat()
      opts.onLost?.(err)
      c.removeAllListeners('notification')
      socket?.destroy()
      schedule()
    }
    c.on('error', onLost)
    c.on('end', () => onLost())
    c.on('notification', (n) => { opts.onNotification?.(n.channel, n.payload ?? '') })
    try {
      await withDeadline(c.connect())
      for (const channel of opts.channels) await withDeadline(c.query(`LISTEN ${c.escapeIdentifier(channel)}`))
    } catch (err) {
      onLost(err)
      return
    }
    if (closed) {
      await c.end().catch(() => {})
      return
    }
    connected = true
    attempt = 0
    const first = !everConnected
    if (!first) reconnects++
    everConnected = true
    startHeartbeat(c)
    opts.onConnect?.(first)
  }

  function startHeartbeat (c: pg.Client): void {
    heartbeatTimer = setInterval(() => {
      if (!connected || client !== c || Date.now() - lastAnswer < heartbeatMs) return
      const beat = opts.heartbeat ?? (() => query('SELECT 1'))
      beat().catch(() => {})
    }, Math.max(10, Math.floor(heartbeatMs / 2)))
    heartbeatTimer.unref()
  }

  function stopHeartbeat (): void {
    if (heartbeatTimer !== undefined) clearInterval(heartbeatTimer)
    heartbeatTimer = undefined
  }

  function schedule (): void {
    if (closed || timer !== undefined) return
    const delay = reconnectDelay(attempt++, backoff)
    timer = setTimeout(() => {
      timer = undefined
      connect().catch(() => {})
    }, delay)
    timer.unref()
  }

  /**
   * A query on the session, failed if it is down or gets no answer within the deadline. Queries run
   * one at a time, in call order (the heartbeat, the capture poll and the leader check can meet):
   * pg's own queue is deprecated and goes in pg 9, and a query's deadline counts from when it is
   * sent, so one waiting behind a slow one does not take a healthy connection for a dead one.
   */
  async function query<R extends Record<string, unknown> = Record<string, unknown>> (text: string, values?: unknown[]): Promise<pg.QueryResult<R>> {
    const c = client
    if (!connected || c === undefined) throw new SessionDownError()
    const run = queue.then(async () => {
      // The connection was lost while this one waited: its successor gets only new queries.
      if (!connected || client !== c) throw new SessionDownError()
      return await withDeadline(c.query<R>(text, values))
    })
    queue = run.then(() => {}, () => {})
    return await run
  }

  return {
    /** Starts the session; resolves after the first attempt, whether it connected or not. */
    start (): Promise<void> {
      firstAttempt ??= connect()
      return firstAttempt
    },
    query,
    async close (): Promise<void> {
      closed = true
      if (timer !== undefined) clearTimeout(timer)
      stopHeartbeat()
      connected = false
      // A polite Terminate, but a dead connection must not hold the shutdown: destroyed after 1 s.
      const force = setTimeout(() => socket?.destroy(), 1000)
      await client?.end().catch(() => {})
      clearTimeout(force)
      socket?.destroy()
    },
    get connected () { return connected },
    /** Times the connection came back after a loss. */
    get reconnects () { return reconnects },
    /** Queries that got no answer in time (each one dropped the connection). */
    get deadlines () { return deadlines }
  }
}

export type PgSession = ReturnType<typeof createPgSession>
