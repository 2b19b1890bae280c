import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { tokenFromRequest } from '../plugins/auth.js'
import { citasOf } from '../plugins/namespace.js'
import { registerNotifyRateLimit } from '../plugins/limits.js'
import { AppError } from '../services/http/errors.js'
import { ErrorReply, NOTIFY_ACTIONS, NotifyBody, NotifyReply, notifyDocs } from './schemas.js'

/** POST /notify/cita: the REST API says a negocio's citas changed; recompute, push, then reply. */
async function notifyRoutes (fastify: FastifyInstance) {
  const ns = citasOf(fastify)
  const { live, auth: citasAuth, limits } = ns
  const rateLimit = await registerNotifyRateLimit(fastify)

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
    config: rateLimit === null ? {} : { rateLimit },
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
