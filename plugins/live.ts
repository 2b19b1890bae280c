import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import type pg from 'pg'
import { randomUUID } from 'node:crypto'
import { createLiveStats } from '../services/live/live-stats.js'
import { createPgSession, type PgSession } from '../services/bus/pg-session.js'
import { poolSettings } from '../services/adapters/pg-pool.js'
import { createBus } from '../services/bus/bus.js'
import type { BusDropReason } from '../services/bus/codec.js'
import { createChangeCapture } from '../services/bus/change-capture.js'
import { Type, type Static } from '@sinclair/typebox'
import { citasOf, provide } from './namespace.js'
import { Int, resolveOptions } from './options.js'

export const LiveOptions = Type.Object({
  bus: Type.Union([Type.Literal('postgres'), Type.Literal('redis'), Type.Literal('memory')], {
    default: 'postgres',
    description: 'How instances tell each other about stats: postgres (NOTIFY/LISTEN on the database, nothing else to run), redis (pub/sub on redisUrl), memory (one process).'
  }),
  redisUrl: Type.Optional(Type.String({ pattern: '^rediss?://', description: 'redis:// URL of the redis bus.' })),
  changeCapture: Type.Boolean({ default: true, description: 'Read the change table the citas trigger fills (db/migrations/004), so writes made without /notify/cita reach dashboards. Off, the table is still drained (and ignored).' }),
  capturePollMs: Int(5, 10, { maximum: 60_000, description: 'How often the capture leader drains the change table, in ms: the most a captured change waits before it is computed.' }),
  captureStallMs: Int(1000, 15_000, { maximum: 15_000, description: 'Change capture counts as stopped when no instance completed a drain of the change table for this long (ms): /ready says degraded, and one warning is logged.' }),
  session: Type.Optional(Type.Union([Type.String({ pattern: '^postgres(ql)?://' }), Type.Object({}, { additionalProperties: true })], {
    description: 'Connection settings (or a postgres:// URL) of the dedicated session: LISTEN and the capture leader\'s lock need a real session, which a transaction-mode pooler cannot give. Default: the pool\'s own settings.'
  })),
  heartbeatMs: Int(100, 5000, { maximum: 60_000, description: 'The session and the Redis connections run a query at least this often when quiet, in ms.' }),
  deadlineMs: Int(100, 5000, { maximum: 60_000, description: 'A session or Redis query without an answer within this (ms) drops the connection, which is then replaced.' }),
  coalesceMs: Int(0, 100, { maximum: 60_000, description: 'Least gap in ms between two recomputes of one negocio once it changes twice within it: a negocio written non-stop gets its latest figures this often, not one query per write, and a single change is never held back. Whatever it is, one negocio\'s recomputes take at most a quarter of the time.' }),
  resyncConcurrency: Int(1, 4, { maximum: 64, description: 'Recomputes running at once when every channel is recomputed (after an outage, a bus reconnect, a new capture leader).' }),
  reconcileSeconds: Type.Number({ minimum: 0, maximum: 86_400, default: 0, description: 'Recompute every channel with subscribers this often (seconds) and push what changed; 0 = off.' }),
  instanceId: Type.Optional(Type.String({ minLength: 1, maxLength: 128, description: 'This instance\'s name on the bus. Default: a random UUID.' })),
  busSecret: Type.Optional(Type.String({ minLength: 16, description: 'Key material for the MAC every bus message carries, the same on every instance. app.ts passes auth.secret when unset. Required with the postgres and redis buses.' }))
})
export type LivePluginOptions = Partial<Omit<Static<typeof LiveOptions>, 'session'>> & {
  session?: pg.ClientConfig | string
}

export type Live = ReturnType<typeof createLive>

declare module './namespace.js' {
  interface CitasLive { live: Live }
}

function createLive (fastify: FastifyInstance, options: LivePluginOptions) {
  const opts = resolveOptions('live', LiveOptions, options)
  const { changeCapture, reconcileSeconds } = opts
  const log = fastify.log
  const origin = opts.instanceId ?? randomUUID()
  const { pool, poolConfig, stats, hub } = citasOf(fastify)
  const timing = { heartbeatMs: opts.heartbeatMs, deadlineMs: opts.deadlineMs }

  // Whatever the bus carried while this instance could not hear it is lost: recompute what it shows.
  const resync = (what: string) => {
    log.info(`${what}: recomputing every channel with subscribers`)
    live.resyncAll().catch(() => {})
  }
  let bus: ReturnType<typeof createBus>
  try {
    bus = createBus({
      kind: opts.bus,
      secret: opts.busSecret,
      redisUrl: opts.redisUrl,
      name: origin,
      ...timing,
      notify: async (channel, payload) => await pool.query('SELECT pg_notify($1, $2)', [channel, payload]),
      onMessage: (message) => live.deliver(message),
      onSubscribed: (first) => { resync(first ? 'redis bus subscribed' : 'redis bus subscribed again') },
      log
    })
  } catch (err) {
    throw new Error(`citas-live live plugin: ${(err as Error).message}`)
  }
  let sessionLostAt = 0
  /** The last session reconnect's resync once started (a new leader's: its first poll): the db monitor waits for it, so one resync. */
  let reconnectResync: Promise<void> = Promise.resolve()

  const baseConnection: pg.ClientConfig = options.session === undefined
    // The pool's settings (host, credentials, TLS), ours or read from the host's pool (stopping the boot if it cannot).
    ? poolConfig ?? poolSettings(pool)
    : typeof options.session === 'string' ? { connectionString: options.session } : options.session
  // A lock held on the change table fails a drain after a second (capture says it stalled), not at the session's deadline.
  const sessionConnection: pg.ClientConfig = { ...baseConnection, options: `${baseConnection.options ?? ''} -c lock_timeout=1000`.trim() }
  // The session's callbacks run only once it is started (onReady), after `capture` below exists.
  const session: PgSession = createPgSession({
    connection: sessionConnection,
    channels: opts.bus === 'postgres' ? [bus.channel] : [],
    ...timing,
    onNotification: (_channel, payload) => bus.receive(payload),
    onConnect: (first) => {
      const attempt = capture.sessionUp()
      if (first) return
      reconnectResync = attempt.then(async (role) => {
        // A new leader makes every instance resync ('*', handed on by its first poll): that covers this reconnect too.
        if (role === 'leader' && changeCapture) await capture.poll()
        else if (opts.bus === 'postgres') resync('database LISTEN connection re-established')
        // The database itself was away: one resync for it, shared with the db monitor's.
        else if (session.connected) await live.resyncSince(sessionLostAt)
      }).catch(() => {})
    },
    onLost: (err) => {
      sessionLostAt = Date.now()
      capture.sessionDown()
      // Ended by the server without an error: a shutdown or restart of PostgreSQL, already told by the db monitor.
      if (err === undefined) log.info('database session (LISTEN, change capture) ended; reconnecting')
      else log.warn({ err }, 'database session (LISTEN, change capture) lost; reconnecting')
    }
  })
  const capture = createChangeCapture({
    session,
    instance: origin,
    // Drained changes go to live-stats, which computes what some instance shows and publishes the rest.
    onChanges: async (ids) => { if (changeCapture) await live.captured(ids) },
    pollMs: changeCapture ? opts.capturePollMs : 1000,
    // A leader whose session answered nothing for two deadlines is gone (its own deadline would have replaced it).
    leaseMs: 2 * opts.deadlineMs,
    stallMs: opts.captureStallMs,
    onStall: (stalled, ageMs) => {
      if (!changeCapture) return
      if (stalled) log.warn({ lastDrainAgeMs: Math.round(ageMs) }, `change capture stalled: no instance completed a drain of the change table for ${Math.round(ageMs / 1000)} s (a lock held on citas_live_cambios, or no instance can lead); direct SQL writes do not reach dashboards until it resumes`)
      else log.info('change capture resumed: the change table is drained again')
    },
    onRole: (role) => log.info({ role }, `change capture: this instance is ${role === 'leader' ? 'the leader (it drains the change table)' : role === 'follower' ? 'a follower (another instance drains the change table)' : 'without a database session'}`),
    onError: (err, context) => log.warn({ err }, context),
    onFailing: (err, message) => {
      if (err === undefined) log.info(message)
      else log.error({ err }, message)
    }
  })

  const live = createLiveStats({
    stats,
    hub,
    origin,
    broadcast: bus.publish,
    barrier: changeCapture ? async () => await capture.poll() : undefined,
    coalesceMs: opts.coalesceMs,
    resyncConcurrency: opts.resyncConcurrency,
    leads: () => capture.role === 'leader',
    onError: (err, context) => log.warn({ err }, context)
  })

  /** One resync for an outage since `downSince`: none while the session is down, nor if the (awaited) reconnect's ran since. */
  async function resyncAfterOutage (downSince: number): Promise<boolean> {
    if (!session.connected) return false
    await reconnectResync
    return await live.resyncSince(downSince)
  }

  /** What /ready and the metrics show of the bus and of change capture. */
  const status = () => ({
    bus: { kind: opts.bus, up: bus.up(session.connected) },
    changeCapture: {
      /** `failing`: the change table cannot be read (not migrated, no privilege); logged when it starts and ends. */
      mode: (!changeCapture ? 'off' : capture.failing ? 'failing' : 'table') as 'table' | 'failing' | 'off',
      role: capture.role,
      /** No instance completed a drain for longer than captureStallMs; logged when it starts and ends. */
      stalled: changeCapture && capture.stalled,
      /** How long ago the last drain completed, in ms (null with capture off). */
      lastDrainAgeMs: changeCapture ? Math.round(capture.drainAgeMs) : null
    }
  })
  const more = {
    bus: opts.bus,
    get busReconnects () { return session.reconnects + bus.reconnects },
    /** Bus messages refused (unsigned, bad signature, malformed, implausible, replayed, stale), by reason. */
    busDropped: bus.dropped as Readonly<Record<BusDropReason, number>>,
    /** Distinct negocio ids, polls, TRUNCATEs and VACUUMs of the change table on this instance, while it led. */
    get captureChanges () { return capture.changes },
    get capturePolls () { return capture.polls },
    get captureCompactions () { return capture.compactions },
    get captureVacuums () { return capture.vacuums },
    status,
    resyncAfterOutage
  }

  let reconcileTimer: NodeJS.Timeout | undefined
  fastify.addHook('onReady', async () => {
    if (changeCapture) log.info({ changeCapture: 'table', pollMs: opts.capturePollMs }, 'change capture: on, from the change table the citas trigger fills (no NOTIFY on the write path); one instance at a time drains it')
    else log.info({ changeCapture: 'off' }, 'change capture: off (CHANGE_CAPTURE=off): direct SQL writes reach dashboards only through /notify/cita')
    await session.start()
    bus.start()
    if (reconcileSeconds > 0) reconcileTimer = setInterval(() => { live.resyncAll().catch(() => {}) }, reconcileSeconds * 1000).unref()
  })
  fastify.addHook('onClose', async () => {
    clearInterval(reconcileTimer)
    live.close()
    capture.close()
    await session.close()
    await bus.close()
  })
  // The getters must stay getters, so not Object.assign.
  return Object.defineProperties(live, Object.getOwnPropertyDescriptors(more)) as typeof live & typeof more
}

async function livePlugin (fastify: FastifyInstance, options: LivePluginOptions) {
  provide(fastify, 'live', createLive(fastify, options))
}

export default fp(livePlugin, { fastify: '5.x', name: 'citas-live-stats', dependencies: ['citas-db', 'citas-stats', 'citas-hub'] })
