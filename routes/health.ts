import type { FastifyInstance } from 'fastify'
import { HealthReply, healthDocs, NotReadyReply, ReadyReply, readyDocs } from './schemas.js'

/** GET /health: the process is alive. GET /ready: the database answers. */
export default async function healthRoutes (fastify: FastifyInstance) {
  fastify.get('/health', { schema: { ...healthDocs, response: { 200: HealthReply } } }, async () => ({ status: 'ok' }))

  fastify.get('/ready', { schema: { ...readyDocs, response: { 200: ReadyReply, 503: NotReadyReply } } }, async (_request, reply) => {
    try {
      await fastify.citasPool.query('SELECT 1')
      return { status: 'ready' }
    } catch (err) {
      fastify.log.warn({ err }, 'readiness check: database unreachable')
      return reply.code(503).send({ status: 'unavailable', code: 'unavailable', message: 'database unreachable' })
    }
  })
}
