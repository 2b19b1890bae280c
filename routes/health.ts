import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { citasOf } from '../plugins/namespace.js'
import { HealthReply, healthDocs, NotReadyReply, ReadyReply, readyDocs } from './schemas.js'

const NOT_READY = { unreachable: 'database unreachable', not_answering: 'database not answering', unknown: 'database not checked yet' } as const

/** GET /health: the process is alive. GET /ready: the database answers (from the db monitor's cached probe), bus and capture state. */
async function healthRoutes (fastify: FastifyInstance) {
  fastify.get('/health', { schema: { ...healthDocs, response: { 200: HealthReply } } }, async () => ({ status: 'ok' }))

  fastify.get('/ready', { schema: { ...readyDocs, response: { 200: ReadyReply, 503: NotReadyReply } } }, async (_request, reply) => {
    const { dbMonitor, live: liveStats } = citasOf(fastify)
    const state = await dbMonitor.readiness()
    const { bus, changeCapture } = liveStats.status()
    const live = {
      bus,
      change_capture: { mode: changeCapture.mode, role: changeCapture.role, stalled: changeCapture.stalled, last_drain_age_ms: changeCapture.lastDrainAgeMs }
    }
    // Reported, not failed: every instance shares them, and pulling all from the load balancer would stop what still works.
    const reasons: string[] = []
    if (!bus.up) reasons.push(`the ${bus.kind} bus is down: other instances' updates are not heard`)
    if (changeCapture.stalled) reasons.push(`change capture stalled: no drain of the change table for ${Math.round((changeCapture.lastDrainAgeMs ?? 0) / 1000)} s`)
    if (state.ready) return reasons.length === 0 ? { status: 'ready' as const, ...live } : { status: 'degraded' as const, reasons, ...live }
    return reply.code(503).send({ status: 'unavailable', code: 'unavailable', message: NOT_READY[state.reason], ...live })
  })
}

export default fp(healthRoutes, { fastify: '5.x', name: 'citas-health', dependencies: ['citas-db-monitor', 'citas-live-stats'], encapsulate: true })
