import { Redis } from 'ioredis'
import { reconnectDelay } from './reconnect.js'

export interface RedisBusOptions {
  url: string
  channel: string
  onMessage: (payload: string) => void
  /** At start, when Redis comes up late, and after every reconnect: what was published meanwhile was missed. */
  onSubscribed?: (first: boolean) => void
  /** The subscriber connection was lost (closed, or declared dead by a deadline). */
  onDown?: () => void
  onError?: (err: unknown) => void
  /** A quiet connection is pinged every heartbeatMs, and reconnected when a ping gets no answer within deadlineMs. */
  heartbeatMs?: number
  deadlineMs?: number
  name?: string
}

/** For deployments where LISTEN is not available (a transaction-mode pooler); publishes fail fast while Redis is away. */
export function createRedisBus (opts: RedisBusOptions) {
  const { heartbeatMs = 5000, deadlineMs = 5000 } = opts
  const retryStrategy = (times: number): number => reconnectDelay(times - 1) // ioredis counts from 1
  const sub = new Redis(opts.url, { lazyConnect: true, retryStrategy, maxRetriesPerRequest: null, connectionName: `citas-live-sub/${opts.name ?? ''}` })
  const pub = new Redis(opts.url, { lazyConnect: true, retryStrategy, enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: deadlineMs, connectionName: `citas-live-pub/${opts.name ?? ''}` })
  let subscriptions = 0
  let subscribed = false
  let closed = false
  const onError = (err: unknown): void => opts.onError?.(err)
  sub.on('error', onError)
  pub.on('error', onError)
  sub.on('message', (_channel: string, payload: string) => opts.onMessage(payload))
  sub.on('ready', () => {
    // ioredis renews the subscription itself; this one is awaited so the resync comes after it.
    sub.subscribe(opts.channel).then(() => {
      subscribed = true
      opts.onSubscribed?.(subscriptions++ === 0)
    }, onError)
  })
  sub.on('close', () => {
    if (!subscribed) return
    subscribed = false
    opts.onDown?.()
  })

  const lastAnswer = { sub: Date.now(), pub: Date.now() }
  async function ping (which: 'sub' | 'pub'): Promise<void> {
    const conn = which === 'sub' ? sub : pub
    if (conn.status !== 'ready') return
    let deadline: NodeJS.Timeout | undefined
    const expired = new Promise<'expired'>((resolve) => { deadline = setTimeout(() => resolve('expired'), deadlineMs) })
    const answer = await Promise.race([conn.ping().then(() => 'ok' as const, () => 'failed' as const), expired])
    clearTimeout(deadline)
    if (answer === 'ok') {
      lastAnswer[which] = Date.now()
    } else if (answer === 'expired' && !closed) {
      onError(new Error(`redis ${which} connection did not answer within ${deadlineMs} ms: reconnecting`))
      conn.disconnect(true)
    }
  }
  const heartbeat = setInterval(() => {
    const at = Date.now()
    if (at - lastAnswer.sub >= heartbeatMs) ping('sub').catch(onError)
    if (at - lastAnswer.pub >= heartbeatMs) ping('pub').catch(onError)
  }, Math.max(10, Math.floor(heartbeatMs / 2))).unref()

  return {
    /** Returns at once whether or not Redis is up: both connections keep retrying. */
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
    get up () { return subscribed && pub.status === 'ready' },
    /** The publisher connection is ready (again): time to send what failed meanwhile. */
    onPublisherReady (listener: () => void): void { pub.on('ready', listener) },
    get reconnects () { return Math.max(0, subscriptions - 1) }
  }
}
