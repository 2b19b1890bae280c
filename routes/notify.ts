import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { tokenFromRequest } from '../plugins/auth.js'
import { citasOf } from '../plugins/namespace.js'
import rateLimit, { type RateLimitOptions } from '@fastify/rate-limit'
import { AppError } from '../services/http/errors.js'
import { ErrorReply, NOTIFY_ACTIONS, NotifyBody, NotifyReply, notifyDocs } from './schemas.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** Who called /notify/cita (the service token's `sub`), set once the token is verified. */
    citasCaller: string | null
  }
}

/** POST /notify/cita: the REST API says a negocio's citas changed; recompute, push, then reply. */
async function notifyRoutes (fastify: FastifyInstance) {
  const ns = citasOf(fastify)
  const { live, auth: citasAuth, limits } = ns
  fastify.decorateRequest('citasCaller', null)
  const config: { rateLimit?: RateLimitOptions } = {}
  if (limits.notifyMax > 0) {
    // In this scope only, per caller (token `sub`, else IP), after authentication: anonymous calls cannot use up a service's budget.
    await fastify.register(rateLimit, { global: false })
    config.rateLimit = {
      max: limits.notifyMax,
      timeWindow: limits.notifyWindowMs,
      hook: 'preHandler',
      keyGenerator: (request) => request.citasCaller !== null ? `sub:${request.citasCaller}` : `ip:${limits.clientAddress(request)}`,
      errorResponseBuilder: (_request, context) => new AppError('rate_limited', `rate limit exceeded, retry in ${context.after}`)
    }
  }

  async function requireService (request: FastifyRequest, _reply: FastifyReply) {
    const token = tokenFromRequest(request, { query: false, protocol: false })
    // The Go server's callers sent no token: from the networks the operator trusts, none is needed.
    if (token === undefined && citasAuth.isTrustedNotifier(limits.clientAddress(request))) {
      request.citasCaller = null
      return
    }
    const claims = citasAuth.verify(token)
    if (!citasAuth.isService(claims)) {
      throw new AppError('forbidden', `notify requires a token with role "${citasAuth.serviceRole}"`)
    }
    request.citasCaller = typeof claims.sub === 'string' ? claims.sub : null
  }

  fastify.withTypeProvider<TypeBoxTypeProvider>().post('/notify/cita', {
    // Authenticate before the body is validated: an anonymous caller learns nothing about the schema.
    onRequest: requireService,
    // The action is a label only once the body passed validation: callers cannot grow the series.
    onResponse: (request, reply, done) => {
      const action = (request.body as { action?: unknown } | undefined)?.action
      ns.observeNotify?.((NOTIFY_ACTIONS as readonly unknown[]).includes(action) ? action as string : 'invalid', reply.statusCode, reply.elapsedTime / 1000)
      done()
    },
    bodyLimit: 16 * 1024,
    config,
    schema: {
      ...notifyDocs,
      body: NotifyBody,
      response: { 200: NotifyReply, '4xx': ErrorReply, '5xx': ErrorReply }
    }
  }, async (request) => {
    const { negocio_id: negocioId, action } = request.body
    const { stats, delivered, bus } = await live.notify(negocioId)
    return { ok: true as const, negocio_id: negocioId, action, delivered, bus, stats }
  })
}

export default fp(notifyRoutes, { fastify: '5.x', name: 'citas-notify', dependencies: ['citas-auth', 'citas-limits', 'citas-live-stats'], encapsulate: true })
