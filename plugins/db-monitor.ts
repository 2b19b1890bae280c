import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { integerOption } from './options.js'
import { createDbMonitor, forEachLimited } from '../services/db-monitor.js'
import { isAppError } from '../services/errors.js'
import { negocioOf } from '../services/protocol.js'

export interface DbMonitorPluginOptions {
  /** Time between probes while the database is down, in ms. Default 1000. */
  probeIntervalMs?: number
  /**
   * When the database is back, recompute and publish every channel with subscribers. Default true;
   * set false to do it yourself through `citasDbMonitor.onUp`.
   */
  recomputeOnRecovery?: boolean
  /** Recomputations running at once after an outage. Default 4. */
  recomputeConcurrency?: number
}

declare module 'fastify' {
  interface FastifyInstance {
    citasDbMonitor: ReturnType<typeof createDbMonitor> & {
      /** Recomputes and publishes every channel that has subscribers; resolves when all are done. */
      recomputeAll: () => Promise<void>
    }
  }
}

/**
 * Database outages: a failed stats query marks the database down; one timer probes it; when it
 * answers, every channel with subscribers gets fresh stats, so dashboards catch up on their own.
 */
async function dbMonitorPlugin (fastify: FastifyInstance, opts: DbMonitorPluginOptions) {
  const probeIntervalMs = opts.probeIntervalMs ?? 1000
  const concurrency = opts.recomputeConcurrency ?? 4
  integerOption('db monitor', 'probeIntervalMs', probeIntervalMs, 10)
  integerOption('db monitor', 'recomputeConcurrency', concurrency, 1)
  const { citasPool, stats, hub, live, log } = fastify

  const monitor = createDbMonitor({
    probe: async () => await citasPool.query('SELECT 1'),
    probeIntervalMs,
    onError: (err) => log.error({ err }, 'database recovery listener failed')
  })

  async function recomputeAll (): Promise<void> {
    const names = [...hub.channelNames()]
    await forEachLimited(names, concurrency, async (channel) => {
      const negocioId = negocioOf(channel)
      if (negocioId === null) return
      // Through the coalescer: refreshes the snapshot too, and shares a run with any notify meanwhile.
      await live.refresh(negocioId, { push: true, broadcast: false })
    }, (err, channel) => {
      if (isAppError(err) && err.code === 'not_found') return
      log.warn({ err, channel }, 'recompute after database outage failed')
    })
  }

  stats.onUnavailable((err) => monitor.reportFailure(err))
  monitor.onDown((err) => log.warn({ err }, 'database unreachable: probing until it answers'))
  monitor.onUp(() => log.info('database is back'))
  if (opts.recomputeOnRecovery ?? true) {
    monitor.onUp(async () => {
      await recomputeAll()
      log.info({ channels: hub.channelCount }, 'stats recomputed after database outage')
    })
  }
  fastify.decorate('citasDbMonitor', Object.assign(monitor, { recomputeAll }))
  fastify.addHook('onClose', async () => { monitor.stop() })
}

export default fp(dbMonitorPlugin, {
  fastify: '5.x',
  name: 'citas-db-monitor',
  dependencies: ['citas-db', 'citas-stats', 'citas-hub', 'citas-live-stats']
})
