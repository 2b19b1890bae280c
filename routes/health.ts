import type { FastifyInstance } from 'fastify'
import { HealthReply, healthDocs, NotReadyReply, ReadyReply, readyDocs } from './schemas.js'

const NOT_READY = {
  unreachable: 'database unreachable',
  not_answering: 'database not answering',
  unknown: 'database not checked yet'
} as const

/**
 * GET /health: the process is alive. GET /ready: the database answers, from the state the db monitor
 * keeps (one probe query a second at most), so probes cost nothing and answer at once even when the
 * database hangs.
 */
export default async function healthRoutes (fastify: FastifyInstance) {
  fastify.get('/health', { schema: { ...healthDocs, response: { 200: HealthReply } } }, async () => ({ status: 'ok' }))

  fastify.get('/ready', { schema: { ...readyDocs, response: { 200: ReadyReply, 503: NotReadyReply } } }, async (_request, reply) => {
    const state = await fastify.citasDbMonitor.readiness()
    if (state.ready) return { status: 'ready' }
    return reply.code(503).send({ status: 'unavailable', code: 'unavailable', message: NOT_READY[state.reason] })
  })
}
