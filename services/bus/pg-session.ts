import net from 'node:net'
import pg from 'pg'
import { reconnectDelay } from './reconnect.js'

export interface PgSessionOptions {
  /** Never a pooled connection: LISTEN and session locks are per session. */
  connection: pg.ClientConfig
  channels: readonly string[]
  onNotification?: (channel: string, payload: string) => void
  /** After every (re)connect, once the LISTENs are in place. */
  onConnect?: (first: boolean) => void
  onLost?: (err: unknown) => void
  /** A query runs at least every heartbeatMs (`SELECT 1` when quiet); one unanswered within deadlineMs destroys the socket. */
  heartbeatMs?: number
  deadlineMs?: number
}

export class SessionDownError extends Error {
  override name = 'SessionDownError'
  constructor () { super('the database session is not connected') }
}

/** A dedicated, self-reconnecting connection; a NAT may drop it unseen for hours: hence a heartbeat, and deadlines that cut the socket. */
export function createPgSession (opts: PgSessionOptions) {
  const { heartbeatMs = 5000, deadlineMs = 5000 } = opts
  const deadlineMessage = `the database session did not answer within ${deadlineMs} ms`
  let client: pg.Client | undefined
  let socket: net.Socket | undefined
  let attempt = 0
  let connects = 0
  let closed = false
  let timer: NodeJS.Timeout | undefined
  let heartbeatTimer: NodeJS.Timeout | undefined
  let deadlines = 0
  let connected = false
  let lastAnswer = 0
  let firstAttempt: Promise<void> | undefined
  /** Settles when the last query given to query() has. */
  let queue: Promise<void> = Promise.resolve()

  async function withDeadline<T> (work: Promise<T>): Promise<T> {
    let deadline: NodeJS.Timeout | undefined
    const expired = new Promise<never>((_resolve, reject) => {
      deadline = setTimeout(() => {
        deadlines++
        // pg then fails every pending query and reports the loss.
        socket?.destroy(new Error(deadlineMessage))
        reject(new Error(deadlineMessage))
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
    // Our own socket, so it can be destroyed: pg offers no public way to drop a connection.
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
      clearInterval(heartbeatTimer)
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
    const first = connects++ === 0
    heartbeatTimer = setInterval(() => {
      if (connected && client === c && Date.now() - lastAnswer >= heartbeatMs) query('SELECT 1').catch(() => {})
    }, Math.max(10, Math.floor(heartbeatMs / 2))).unref()
    opts.onConnect?.(first)
  }

  function schedule (): void {
    if (closed || timer !== undefined) return
    timer = setTimeout(() => {
      timer = undefined
      connect().catch(() => {})
    }, reconnectDelay(attempt++)).unref()
  }

  // Our own queue: pg's goes in pg 9, and a deadline counted from the send does not mistake a queued query for a dead connection.
  async function query<R extends Record<string, unknown> = Record<string, unknown>> (text: string, values?: unknown[], name?: string): Promise<pg.QueryResult<R>> {
    const c = client
    if (!connected || c === undefined) throw new SessionDownError()
    const run = queue.then(async () => {
      // Lost while this one waited: its successor gets only new queries.
      if (!connected || client !== c) throw new SessionDownError()
      // A name makes it a prepared statement: parsed and planned once per session.
      return await withDeadline(c.query<R>(name === undefined ? { text, values } : { name, text, values }))
    })
    queue = run.then(() => {}, () => {})
    return await run
  }

  return {
    /** Resolves after the first attempt, whether it connected or not. */
    start (): Promise<void> {
      firstAttempt ??= connect()
      return firstAttempt
    },
    query,
    async close (): Promise<void> {
      closed = true
      clearTimeout(timer)
      clearInterval(heartbeatTimer)
      connected = false
      // A polite Terminate, but a dead connection must not hold the shutdown.
      const force = setTimeout(() => socket?.destroy(), 1000)
      await client?.end().catch(() => {})
      clearTimeout(force)
      socket?.destroy()
    },
    get connected () { return connected },
    /** Times the connection came back after a loss. */
    get reconnects () { return Math.max(0, connects - 1) },
    get deadlines () { return deadlines }
  }
}

export type PgSession = ReturnType<typeof createPgSession>
