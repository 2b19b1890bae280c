import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { Type, type Static } from '@sinclair/typebox'
import { Int, resolveOptions } from './options.js'
import { createDbMonitor, createReadiness, type Readiness } from '../services/live/db-monitor.js'
import { citasOf, provide } from './namespace.js'

export const DbMonitorOptions = Type.Object({
  probeIntervalMs: Int(10, 1000, { description: 'Time between probes while the database is down, in ms.' }),
  recomputeOnRecovery: Type.Boolean({ default: true, description: 'When the database is back, recompute and publish every channel with subscribers (false: do it yourself through dbMonitor.onUp, e.g. with live.resyncAll()).' }),
  readinessRefreshMs: Int(0, 1000, { description: 'GET /ready probes the database at most once per this many ms and answers from the result.' }),
  readinessHangMs: Int(100, 2000, { description: 'A readiness probe unanswered for this long (ms) reports the database as not answering.' })
})
export type DbMonitorPluginOptions = Partial<Static<typeof DbMonitorOptions>>

export type DbMonitor = ReturnType<typeof createDbMonitor> & {
  /** Whether the database answers, for GET /ready (createReadiness); not ready while a failure is being probed. */
  readiness: () => Promise<Readiness>
}

declare module './namespace.js' {
  interface CitasLive { dbMonitor: DbMonitor }
}

/** Database outages: a failed stats query marks it down, one timer probes it, and its return refreshes every subscribed channel. */
async function dbMonitorPlugin (fastify: FastifyInstance, options: DbMonitorPluginOptions) {
  const opts = resolveOptions('db monitor', DbMonitorOptions, options)
  const { pool, stats, hub, live } = citasOf(fastify)
  const { log } = fastify
  const selectOne = async () => await pool.query('SELECT 1')
  const monitor = createDbMonitor({
    probe: selectOne,
    probeIntervalMs: opts.probeIntervalMs,
    onError: (err) => log.error({ err }, 'database recovery listener failed')
  })
  const probe = createReadiness({ probe: selectOne, refreshMs: opts.readinessRefreshMs, hangAfterMs: opts.readinessHangMs })
  let lastReady = true
  async function readiness (): Promise<Readiness> {
    const state: Readiness = monitor.isUp ? await probe.check() : { ready: false, reason: 'unreachable' }
    // Logged on a change only: probes come often, an outage is one line (the monitor logs its own).
    if (state.ready !== lastReady) {
      lastReady = state.ready
      if (state.ready) log.info('readiness: the database answers again')
      else log.warn({ reason: state.reason }, 'readiness: the database does not answer')
    }
    return state
  }

  stats.onUnavailable((err) => monitor.reportFailure(err))
  let downSince = 0
  monitor.onDown(() => { downSince = Date.now() })
  monitor.onDown(() => probe.invalidate())
  monitor.onDown((err) => log.warn({ err }, 'database unreachable: probing until it answers'))
  monitor.onUp(() => log.info('database is back'))
  if (opts.recomputeOnRecovery) {
    monitor.onUp(async () => {
      // One outage, one resync: none if the session's reconnect already did it since the outage began.
      const ran = await live.resyncAfterOutage(downSince)
      log.info({ channels: hub.channelCount, resynced: ran }, ran
        ? 'stats recomputed after database outage'
        : 'stats recomputed after database outage by the database session\'s reconnect')
    })
  }
  provide(fastify, 'dbMonitor', Object.assign(monitor, { readiness }))
  // The first /ready (a load balancer's, right after boot) answers from this probe.
  fastify.addHook('onReady', async () => { probe.prime() })
  fastify.addHook('onClose', async () => { monitor.stop() })
}

export default fp(dbMonitorPlugin, { fastify: '5.x', name: 'citas-db-monitor', dependencies: ['citas-db', 'citas-stats', 'citas-hub', 'citas-live-stats'] })
