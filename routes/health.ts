import type { FastifyInstance } from 'fastify'

/** GET /health: the process is alive. GET /ready: the database answers. */
export default async function healthRoutes (fastify: FastifyInstance) {
  fastify.get('/health', async () => ({ status: 'ok' }))

  fastify.get('/ready', async (_request, reply) => {
    try {
      await fastify.citasPool.query('SELECT 1')
      return { status: 'ready' }
    } catch (err) {
      fastify.log.warn({ err }, 'readiness check: database unreachable')
      return reply.code(503).send({ status: 'unavailable', code: 'unavailable', message: 'database unreachable' })
    }
  })
}
