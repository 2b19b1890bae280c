/**
 * How instances tell each other what changed: PostgreSQL NOTIFY (LISTEN on pg-session.ts) or Redis
 * pub/sub (redis-bus.ts), messages signed and checked by codec.ts, unsent ones kept by outbox.ts.
 * change-capture.ts drains the table the citas triggers fill, on the same session.
 */
import { randomUUID } from 'node:crypto'
import { BUS_DROP_REASONS, createBusCodec, type BusCodec, type BusDropReason, type BusMessage } from './codec.js'
import { createBusOutbox } from './outbox.js'
import { createRedisBus } from './redis-bus.js'

export type BusKind = 'memory' | 'postgres' | 'redis'

export interface BusOptions {
  kind: BusKind
  /** Key material of the MAC (postgres and redis). */
  secret?: string
  redisUrl?: string
  name: string
  heartbeatMs: number
  deadlineMs: number
  notify: (channel: string, payload: string) => Promise<unknown>
  onMessage: (message: BusMessage) => void
  /** The Redis subscription is (again) in place: what was published meanwhile was missed. */
  onSubscribed?: (first: boolean) => void
  log: { warn: (obj: object, msg?: string) => void, debug: (obj: object, msg?: string) => void }
}

/** Named after the key: other deployments never hear us, and a role without the key cannot name the channel. */
export const pgBusChannel = (codec: Pick<BusCodec, 'channelTag'>): string => `citas_live_bus_${codec.channelTag}`

/** A flood of refused messages must not flood the log: one line per interval, with the counts. */
const DROP_LOG_INTERVAL_MS = 60_000

export function createBus (opts: BusOptions) {
  const { kind, log, name, heartbeatMs, deadlineMs } = opts
  if (kind === 'redis' && opts.redisUrl === undefined) throw new Error('the redis bus needs redisUrl')
  if (kind !== 'memory' && opts.secret === undefined) throw new Error(`the ${kind} bus signs its messages: pass busSecret (or auth.secret) of at least 16 characters, the same on every instance`)
  // The memory bus sends nothing: its codec's random key is never used.
  const codec = createBusCodec(kind === 'memory' ? randomUUID() + randomUUID() : opts.secret as string)
  const channel = pgBusChannel(codec)
  const dropped = Object.fromEntries(BUS_DROP_REASONS.map((reason) => [reason, 0])) as Record<BusDropReason, number>
  let lastDropLog = 0
  let droppedSinceLog = 0

  function receive (payload: string): void {
    if (codec.isOwn(payload)) return // PostgreSQL echoes our own NOTIFYs: skipped before the MAC
    const decoded = codec.decode(payload)
    if (decoded.ok) {
      opts.onMessage(decoded.message)
      return
    }
    dropped[decoded.reason]++
    droppedSinceLog++
    const at = Date.now()
    if (at - lastDropLog >= DROP_LOG_INTERVAL_MS) {
      log.warn({ reason: decoded.reason, dropped: droppedSinceLog, totals: { ...dropped } }, 'refused bus messages (forged, replayed or corrupt): is something else writing to the bus channel?')
      lastDropLog = at
      droppedSinceLog = 0
    }
  }

  const redis = kind !== 'redis'
    ? undefined
    : createRedisBus({
      url: opts.redisUrl as string, channel: `citas-live:stats:${codec.channelTag}`, name, heartbeatMs, deadlineMs,
      onMessage: receive,
      // The first subscription too: Redis may have come up long after this instance started.
      onSubscribed: opts.onSubscribed,
      onDown: () => log.warn({}, 'redis bus connection lost; reconnecting'),
      onError: (err) => log.warn({ err }, 'redis bus error')
    })
  const send = kind === 'postgres'
    ? async (m: BusMessage) => { await opts.notify(channel, codec.encode(m)) }
    : redis !== undefined ? async (m: BusMessage) => { await redis.publish(codec.encode(m)) } : undefined
  const outbox = send === undefined ? undefined : createBusOutbox(send, { onError: (err) => log.debug({ err }, 'bus still unreachable; will send again') })
  redis?.onPublisherReady(() => { outbox?.flush().catch(() => {}) })

  return {
    kind,
    /** The channel the session LISTENs on, and what it hears there (the postgres bus). */
    channel,
    receive,
    /** Sends to the other instances, keeping a notify's stats it could not send; undefined for one process. */
    publish: outbox?.publish,
    dropped: dropped as Readonly<Record<BusDropReason, number>>,
    /** Whether messages flow both ways (the postgres bus: whether the session is up). */
    up: (sessionUp: boolean): boolean => kind === 'memory' || (redis?.up ?? sessionUp),
    get reconnects () { return redis?.reconnects ?? 0 },
    start (): void { redis?.start() },
    async close (): Promise<void> {
      outbox?.close()
      await redis?.close()
    }
  }
}
