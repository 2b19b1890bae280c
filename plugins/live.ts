import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import type pg from 'pg'
import { randomUUID } from 'node:crypto'
import { createLiveStats, type BusMessage } from '../services/live-stats.js'
import { createPgListener, type PgListener } from '../services/pg-listener.js'
import { createRedisBus } from '../services/redis-bus.js'

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
    }
  }
}

function isBusMessage (value: unknown): value is BusMessage {
  const v = value as BusMessage | null
  return typeof v === 'object' && v !== null && typeof v.origin === 'string' &&
    typeof v.snapshot === 'object' && v.snapshot !== null && typeof v.snapshot.version === 'number' &&
    typeof v.snapshot.dayEndsAt === 'number' && typeof v.snapshot.stats?.negocio_id === 'string'
}

async function livePlugin (fastify: FastifyInstance, opts: LivePluginOptions) {
  const busKind = opts.bus ?? 'postgres'
  if (busKind === 'redis' && (opts.redisUrl === undefined || opts.redisUrl === '')) {
    throw new Error('citas-live live plugin: bus "redis" needs redisUrl')
  }
  const changeCapture = opts.changeCapture ?? true
  const reconcileSeconds = opts.reconcileSeconds ?? 0
  if (!Number.isFinite(reconcileSeconds) || reconcileSeconds < 0) throw new Error('citas-live live plugin: reconcileSeconds must be >= 0')
  const log = fastify.log
  const origin = opts.instanceId ?? randomUUID()
  const pool = fastify.citasPool

  const onBusPayload = (payload: string): void => {
    let message: unknown
    try {
      message = JSON.parse(payload)
    } catch {
      message = undefined
    }
    if (isBusMessage(message)) live.deliver(message)
    else log.warn({ payload: payload.slice(0, 200) }, 'ignored a malformed bus message')
  }
  const onReconnect = (what: string) => () => {
    log.info(`${what} connection re-established: recomputing every channel with subscribers`)
    live.resyncAll(true)
  }

  let broadcast: ((m: BusMessage) => Promise<void>) | undefined
  let redis: ReturnType<typeof createRedisBus> | undefined
  if (busKind === 'postgres') {
    broadcast = async (m) => { await pool.query('SELECT pg_notify($1, $2)', [BUS_CHANNEL, JSON.stringify(m)]) }
  } else if (busKind === 'redis') {
    redis = createRedisBus({
      url: opts.redisUrl as string,
      channel: 'citas-live:stats',
      onMessage: onBusPayload,
      onReconnect: onReconnect('redis bus'),
      onError: (err) => log.warn({ err }, 'redis bus error')
    })
    const r = redis
    broadcast = async (m) => { await r.publish(JSON.stringify(m)) }
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
    busReconnects: { get: () => (listener?.reconnects ?? 0) + (redis?.reconnects ?? 0), enumerable: true }
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
