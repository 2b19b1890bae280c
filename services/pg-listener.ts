import pg from 'pg'

export interface PgListenerOptions {
  /** Connection settings of the dedicated LISTEN connection (never a pooled one: LISTEN is per session). */
  connection: pg.ClientConfig
  channels: readonly string[]
  onNotification: (channel: string, payload: string) => void
  /** Called when the connection is back after a loss; not on the first connect. */
  onReconnect?: () => void
  onError?: (err: unknown) => void
  /** Backoff between reconnect attempts, in ms. */
  minDelayMs?: number
  maxDelayMs?: number
}

/**
 * One dedicated PostgreSQL connection that LISTENs on a few channels and comes back by itself,
 * with exponential backoff and jitter, after the server restarts or kills it.
 */
export function createPgListener (opts: PgListenerOptions) {
  const minDelay = opts.minDelayMs ?? 100
  const maxDelay = opts.maxDelayMs ?? 10_000
  let client: pg.Client | undefined
  let attempt = 0
  let everConnected = false
  let closed = false
  let timer: NodeJS.Timeout | undefined
  let reconnects = 0
  let connected = false
  let firstAttempt: Promise<void> | undefined

  async function connect (): Promise<void> {
    if (closed) return
    const c = new pg.Client({ ...opts.connection, keepAlive: true, application_name: 'citas-live-listener' })
    client = c
    let lost = false
    const onLost = (err?: unknown): void => {
      if (lost) return
      lost = true
      connected = false
      if (err !== undefined) opts.onError?.(err)
      c.removeAllListeners('notification')
      c.end().catch(() => {})
      schedule()
    }
    c.on('error', onLost)
    c.on('end', () => onLost())
    c.on('notification', (n) => { opts.onNotification(n.channel, n.payload ?? '') })
    try {
      await c.connect()
      for (const channel of opts.channels) await c.query(`LISTEN ${c.escapeIdentifier(channel)}`)
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
    if (everConnected) {
      reconnects++
      opts.onReconnect?.()
    }
    everConnected = true
  }

  function schedule (): void {
    if (closed || timer !== undefined) return
    const ceiling = Math.min(maxDelay, minDelay * 2 ** attempt)
    attempt++
    timer = setTimeout(() => {
      timer = undefined
      connect().catch((err: unknown) => opts.onError?.(err))
    }, minDelay + Math.random() * (ceiling - minDelay))
    timer.unref()
  }

  return {
    /** Starts listening; resolves after the first attempt, whether it connected or not. */
    start (): Promise<void> {
      firstAttempt ??= connect()
      return firstAttempt
    },
    async close (): Promise<void> {
      closed = true
      if (timer !== undefined) clearTimeout(timer)
      connected = false
      await client?.end().catch(() => {})
    },
    get connected () { return connected },
    get reconnects () { return reconnects }
  }
}

export type PgListener = ReturnType<typeof createPgListener>
