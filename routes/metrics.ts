import fp from 'fastify-plugin'
import { replyError } from '../services/http/errors.js'
import type { FastifyInstance } from 'fastify'
import { timingSafeEqual } from 'node:crypto'
import { citasOf } from '../plugins/namespace.js'

function sameSecret (given: string, expected: string): boolean {
  const a = Buffer.from(given)
  const b = Buffer.from(expected)
  return a.length === b.length && timingSafeEqual(a, b)
}

/** GET /metrics on the public port, for scrapers holding METRICS_TOKEN. */
async function metricsRoutes (fastify: FastifyInstance, opts: { token: string }) {
  fastify.get('/metrics', async (request, reply) => {
    const header = request.headers.authorization ?? ''
    if (!header.startsWith('Bearer ') || !sameSecret(header.slice(7), opts.token)) {
      return await replyError(reply, 401, 'unauthorized', 'metrics need the metrics token')
    }
    const { metrics, scrapeMetrics } = citasOf(fastify)
    return await reply.type(metrics.contentType).send(await scrapeMetrics())
  })
}

export default fp(metricsRoutes, { fastify: '5.x', name: 'citas-metrics-route', dependencies: ['citas-metrics'], encapsulate: true })
