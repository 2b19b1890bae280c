import { Redis } from 'ioredis'
import { reconnectDelay } from './reconnect.js'

export interface RedisBusOptions {
  url: string
  channel: string
  onMessage: (payload: string) => void
  /**
   * Called each time the subscription is in place: at start, when Redis comes up after a start
   * without it, and after every reconnect. Whatever was published meanwhile was missed: resync.
   */
  onSubscribed?: (first: boolean) => void
  /** Called when the subscriber connection is lost (closed, or declared dead by a deadline). */
  onDown?: () => void
  onError?: (err: unknown) => void
  /** Each connection is pinged this often when it has been quiet... Default 5 s. */
  heartbeatMs?: number
  /** ...and reconnected when a command gets no answer within this. Default 5 s. */
  deadlineMs?: number
  /** Shown in Redis's CLIENT LIST after `citas-live-sub/` and `citas-live-pub/` (this instance's id). */
  name?: string
}

/**
 * Redis pub/sub between instances, for deployments where LISTEN is not available (a
 * transaction-mode pooler in front of PostgreSQL). Both connections come back by themselves with
 * backoff (services/reconnect.ts: at most a second between attempts, however long Redis was away); the subscription is
 * made whether or not Redis is up at start, and renewed on every reconnect. Publishes fail fast
 * while Redis is away instead of queueing. A connection that stops answering without closing (a
 * dropped route) fails its ping's deadline and is reconnected.
 */
export function createRedisBus (opts: RedisBusOptions) {
  const heartbeatMs = opts.heartbeatMs ?? 5000
  const deadlineMs = opts.deadlineMs ?? 5000
  // ioredis counts attempts from 1.
  const retryStrategy = (times: number): number => reconnectDelay(times - 1)
  const sub = new Redis(opts.url, { lazyConnect: true, retryStrategy, maxRetriesPerRequest: null, connectionName: `citas-live-sub/${opts.name ?? ''}` })
  const pub = new Redis(opts.url, { lazyConnect: true, retryStrategy, enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: deadlineMs, connectionName: `citas-live-pub/${opts.name ?? ''}` })
  let subscriptions = 0
  let reconnects = 0
  let deadlines = 0
  let subscribed = false
  let closed = false
  const onError = (err: unknown): void => opts.onError?.(err)
  sub.on('error', onError)
  pub.on('error', onError)
  sub.on('message', (_channel: string, payload: string) => opts.onMessage(payload))
  sub.on('ready', () => {
    // The subscription is renewed by ioredis on reconnect; this one is acknowledged before the resync.
    sub.subscribe(opts.channel).then(() => {
      subscribed = true
      const first = subscriptions === 0
      subscriptions++
      if (!first) reconnects++
      opts.onSubscribed?.(first)
    }, onError)
  })
  sub.on('close', () => {
    if (!subscribed) return
    subscribed = false
    opts.onDown?.()
  })

  let lastAnswer = { sub: Date.now(), pub: Date.now() }
  async function ping (which: 'sub' | 'pub'): Promise<void> {
    const conn = which === 'sub' ? sub : pub
    if (conn.status !== 'ready') return
    let deadline: NodeJS.Timeout | undefined
    const expired = new Promise<'expired'>((resolve) => { deadline = setTimeout(() => resolve('expired'), deadlineMs) })
    const answer = await Promise.race([conn.ping().then(() => 'ok' as const, () => 'failed' as const), expired])
    clearTimeout(deadline)
    if (answer === 'ok') {
      lastAnswer = { ...lastAnswer, [which]: Date.now() }
    } else if (answer === 'expired' && !closed) {
      deadlines++
      onError(new Error(`redis ${which} connection did not answer within ${deadlineMs} ms: reconnecting`))
      conn.disconnect(true)
    }
  }
  const heartbeat = setInterval(() => {
    const at = Date.now()
    if (at - lastAnswer.sub >= heartbeatMs) ping('sub').catch(onError)
    if (at - lastAnswer.pub >= heartbeatMs) ping('pub').catch(onError)
  }, Math.max(10, Math.floor(heartbeatMs / 2)))
  heartbeat.unref()

  return {
    /** Starts both connections; resolves at once whether or not Redis is up (they keep retrying). */
    start (): void {
      sub.connect().catch(() => {})
      pub.connect().catch(() => {})
    },
    async publish (payload: string): Promise<void> {
      await pub.publish(opts.channel, payload)
    },
    async close (): Promise<void> {
      closed = true
      clearInterval(heartbeat)
      sub.disconnect()
      pub.disconnect()
    },
    /** Whether messages flow both ways now: subscribed and able to publish. */
    get up () { return subscribed && pub.status === 'ready' },
    /** Called when the publisher connection is ready (again), to send what failed meanwhile. */
    onPublisherReady (listener: () => void): void { pub.on('ready', listener) },
    get reconnects () { return reconnects },
    /** Pings that got no answer in time (each one dropped its connection). */
    get deadlines () { return deadlines }
  }
}
