import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import type pg from 'pg'
import { randomUUID } from 'node:crypto'
import { createLiveStats, type BusMessage } from '../services/live-stats.js'
import { createPgListener, type PgListener } from '../services/pg-listener.js'
import { createRedisBus } from '../services/redis-bus.js'
import { createBusCodec, type BusDropReason } from '../services/bus-codec.js'

export type BusKind = 'memory' | 'postgres' | 'redis'

export interface LivePluginOptions {
  /**
   * How instances tell each other about stats they computed. `postgres` (default): NOTIFY/LISTEN
   * on the database, no extra infrastructure. `redis`: pub/sub on `redisUrl`. `memory`: one process.
   */
  bus?: BusKind
  redisUrl?: string
  /** Listen to the citas trigger so writes made without /notify/cita reach dashboards. Default true. */
  changeCapture?: boolean
  /** Least gap in ms between two recomputes of one negocio during a burst. Default 100. */
  coalesceMs?: number
  /** Recompute every channel with subscribers this often and push what changed; 0 = off (default). */
  reconcileSeconds?: number
  /** This instance's name on the bus. Default: a random UUID. */
  instanceId?: string
  /**
   * Key material for the MAC every bus message carries (at least 16 characters, the same on every
   * instance). app.ts passes auth.secret when this is unset. Required with the postgres and redis buses.
   */
  busSecret?: string
}

/** NOTIFY channel of the stats bus between instances. */
export const BUS_CHANNEL = 'citas_live_bus'
/** NOTIFY channel the citas trigger writes negocio_ids to (db/migrations/002_change_capture.sql). */
export const CHANGE_CHANNEL = 'citas_live_cambios'

declare module 'fastify' {
  interface FastifyInstance {
    live: ReturnType<typeof createLiveStats> & {
      readonly bus: BusKind
      /** Times the bus connection was lost and re-established. */
      readonly busReconnects: number
      /** Bus messages refused (unsigned, bad signature, malformed, implausible), by reason. */
      readonly busDropped: Readonly<Record<BusDropReason, number>>
    }
  }
}

/** A refused bus message is logged at most this often (with the counts since), so a flood cannot flood the log. */
const DROP_LOG_INTERVAL_MS = 60_000

async function livePlugin (fastify: FastifyInstance, opts: LivePluginOptions) {
  const busKind = opts.bus ?? 'postgres'
  if (busKind === 'redis' && (opts.redisUrl === undefined || opts.redisUrl === '')) {
    throw new Error('citas-live live plugin: bus "redis" needs redisUrl')
  }
  const changeCapture = opts.changeCapture ?? true
  const reconcileSeconds = opts.reconcileSeconds ?? 0
  if (!Number.isFinite(reconcileSeconds) || reconcileSeconds < 0) throw new Error('citas-live live plugin: reconcileSeconds must be >= 0')
  if (busKind !== 'memory' && (opts.busSecret === undefined || opts.busSecret.length < 16)) {
    throw new Error(`citas-live live plugin: the ${busKind} bus signs its messages: pass busSecret (or auth.secret) of at least 16 characters, the same on every instance`)
  }
  // The memory bus sends nothing; its codec, under a key of its own, is never used.
  const codec = createBusCodec(busKind === 'memory' ? randomUUID() + randomUUID() : opts.busSecret as string)
  const log = fastify.log
  const origin = opts.instanceId ?? randomUUID()
  const pool = fastify.citasPool

  const dropped: Record<BusDropReason, number> = { unsigned: 0, bad_signature: 0, malformed: 0, implausible: 0 }
  let lastDropLog = 0
  let droppedSinceLog = 0
  const onBusPayload = (payload: string): void => {
    const decoded = codec.decode(payload)
    if (decoded.ok) {
      live.deliver(decoded.message)
      return
    }
    dropped[decoded.reason]++
    droppedSinceLog++
    const at = Date.now()
    if (at - lastDropLog >= DROP_LOG_INTERVAL_MS) {
      log.warn({ reason: decoded.reason, dropped: droppedSinceLog, totals: { ...dropped } }, 'refused bus messages (forged or corrupt): is something else writing to the bus channel?')
      lastDropLog = at
      droppedSinceLog = 0
    }
  }
  const onReconnect = (what: string) => () => {
    log.info(`${what} connection re-established: recomputing every channel with subscribers`)
    live.resyncAll(true)
  }

  let broadcast: ((m: BusMessage) => Promise<void>) | undefined
  let redis: ReturnType<typeof createRedisBus> | undefined
  if (busKind === 'postgres') {
    broadcast = async (m) => { await pool.query('SELECT pg_notify($1, $2)', [BUS_CHANNEL, codec.encode(m)]) }
  } else if (busKind === 'redis') {
    redis = createRedisBus({
      url: opts.redisUrl as string,
      channel: 'citas-live:stats',
      onMessage: onBusPayload,
      onReconnect: onReconnect('redis bus'),
      onError: (err) => log.warn({ err }, 'redis bus error')
    })
    const r = redis
    broadcast = async (m) => { await r.publish(codec.encode(m)) }
  }

  const live = createLiveStats({
    stats: fastify.stats,
    hub: fastify.hub,
    origin,
    ...(broadcast !== undefined ? { broadcast } : {}),
    ...(opts.coalesceMs !== undefined ? { coalesceMs: opts.coalesceMs } : {}),
    onError: (err, context) => log.warn({ err }, context)
  })

  const channels = [...(busKind === 'postgres' ? [BUS_CHANNEL] : []), ...(changeCapture ? [CHANGE_CHANNEL] : [])]
  let listener: PgListener | undefined
  if (channels.length > 0) {
    listener = createPgListener({
      // Same settings as the pool (host, credentials, TLS), but a session of its own.
      connection: (pool as unknown as { options: pg.ClientConfig }).options,
      channels,
      onNotification: (channel, payload) => {
        if (channel === BUS_CHANNEL) onBusPayload(payload)
        else live.changed(payload)
      },
      onReconnect: onReconnect('database LISTEN'),
      onError: (err) => log.warn({ err }, 'database LISTEN connection lost; reconnecting')
    })
  }

  // defineProperties, not Object.assign: the getter must stay a getter.
  fastify.decorate('live', Object.defineProperties(live, {
    bus: { value: busKind, enumerable: true },
    busReconnects: { get: () => (listener?.reconnects ?? 0) + (redis?.reconnects ?? 0), enumerable: true },
    busDropped: { value: dropped, enumerable: true }
  }) as FastifyInstance['live'])

  let reconcileTimer: NodeJS.Timeout | undefined
  fastify.addHook('onReady', async () => {
    await listener?.start()
    if (redis !== undefined) {
      await redis.start().catch((err: unknown) => log.warn({ err }, 'redis bus unreachable at start; retrying in the background'))
    }
    if (reconcileSeconds > 0) {
      reconcileTimer = setInterval(() => live.resyncAll(false), reconcileSeconds * 1000)
      reconcileTimer.unref()
    }
  })
  fastify.addHook('onClose', async () => {
    if (reconcileTimer !== undefined) clearInterval(reconcileTimer)
    live.close()
    await listener?.close()
    await redis?.close()
  })
}

export default fp(livePlugin, { fastify: '5.x', name: 'citas-live-stats', dependencies: ['citas-db', 'citas-stats', 'citas-hub'] })
