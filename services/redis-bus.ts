import { Redis } from 'ioredis'

export interface RedisBusOptions {
  url: string
  channel: string
  onMessage: (payload: string) => void
  /** Called when the subscriber connection is back after a loss; not on the first connect. */
  onReconnect?: () => void
  onError?: (err: unknown) => void
}

/**
 * Redis pub/sub between instances, for deployments where LISTEN is not available (a
 * transaction-mode pooler in front of PostgreSQL). ioredis reconnects with backoff and
 * resubscribes by itself; publishes fail fast while Redis is away instead of queueing.
 */
export function createRedisBus (opts: RedisBusOptions) {
  const retryStrategy = (times: number): number => Math.min(100 * 2 ** Math.min(times, 7), 10_000) * (0.5 + Math.random() / 2)
  const sub = new Redis(opts.url, { lazyConnect: true, retryStrategy, maxRetriesPerRequest: null, connectionName: 'citas-live-sub' })
  const pub = new Redis(opts.url, { lazyConnect: true, retryStrategy, enableOfflineQueue: false, maxRetriesPerRequest: 1, connectionName: 'citas-live-pub' })
  let readyOnce = false
  let reconnects = 0
  const onError = (err: unknown): void => opts.onError?.(err)
  sub.on('error', onError)
  pub.on('error', onError)
  sub.on('message', (_channel: string, payload: string) => opts.onMessage(payload))
  sub.on('ready', () => {
    if (readyOnce) {
      reconnects++
      opts.onReconnect?.()
    }
    readyOnce = true
  })

  return {
    /** Connects and subscribes; rejects when Redis is unreachable at start (it keeps retrying). */
    async start (): Promise<void> {
      await Promise.all([pub.connect(), sub.connect()])
      await sub.subscribe(opts.channel)
    },
    async publish (payload: string): Promise<void> {
      await pub.publish(opts.channel, payload)
    },
    async close (): Promise<void> {
      sub.disconnect()
      pub.disconnect()
    },
    get reconnects () { return reconnects }
  }
}
