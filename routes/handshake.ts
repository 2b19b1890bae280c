import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
import { tokenFromRequest } from '../plugins/auth.js'
import { isAppError, replyError } from '../services/http/errors.js'
import type { Access } from '../services/live/hub.js'
import { userKeyOf } from '../services/http/limits.js'
import { citasOf } from '../plugins/namespace.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** Set once the token is verified. */
    citasAccess: Access | null
    /** The per-user limit's key (null when that limit is off), computed once per handshake. */
    citasUserKey: string | null
  }
}

/** Capacity (503), origin (403), token (401) and limits (429) before a connection exists; callbacks, as promises cost every connect. */
export function handshakeHooks (fastify: FastifyInstance, { what, protocolToken, onAccepted }: {
  what: string, protocolToken: boolean, onAccepted?: (request: FastifyRequest, reply: FastifyReply) => void
}) {
  const { auth: citasAuth, limits, hub } = citasOf(fastify)
  // Once per scope, which may register both /ws and /sse.
  if (!fastify.hasRequestDecorator('citasAccess')) {
    fastify.decorateRequest('citasAccess', null)
    fastify.decorateRequest('citasUserKey', null)
  }
  const tokenSources = { query: true, protocol: protocolToken }

  function checkOrigin (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void {
    if (hub.connectionCount >= limits.capacity && request.method === 'GET') {
      limits.refused.capacity++
      request.log.info({ capacity: limits.capacity }, `${what} refused: this process is full`)
      // Spread over 5-15 s, so a crowd refused together does not come back together.
      reply.header('retry-after', String(5 + Math.floor(Math.random() * 11))).header('connection', 'close')
      replyError(readableByOrigin(request, reply), 503, 'unavailable', 'this server is full: retry later')
      return
    }
    if (limits.isOriginAllowed(request.headers.origin)) {
      done()
      return
    }
    request.log.info({ origin: request.headers.origin }, `${what} refused: origin not allowed`)
    replyError(reply, 403, 'forbidden', 'origin not allowed')
  }

  /** Lets an allowed origin's page read a refusal (the SDK re-asks with a GET: browsers hide why a handshake failed). */
  function readableByOrigin (request: FastifyRequest, reply: FastifyReply): FastifyReply {
    const origin = request.headers.origin
    if (origin !== undefined) reply.header('access-control-allow-origin', origin).header('vary', 'Origin')
    return reply
  }

  function authenticate (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void {
    try {
      request.citasAccess = citasAuth.accessOf(citasAuth.verify(tokenFromRequest(request, tokenSources)))
    } catch (err) {
      if (!isAppError(err)) {
        done(err as Error)
        return
      }
      request.log.info({ reason: err.message }, `${what} refused`)
      replyError(readableByOrigin(request, reply), 401, 'unauthorized', err.message)
      return
    }
    // The address only when the per-IP limit is on: reading it asks the kernel for the peer address.
    request.citasUserKey = limits.perUser.enabled ? userKeyOf(request.citasAccess) : null
    const which = request.citasUserKey !== null && limits.perUser.full(request.citasUserKey)
      ? 'user'
      : limits.perIp.enabled && limits.perIp.full(limits.clientAddress(request)) ? 'IP address' : null
    if (which !== null) {
      refuseFull(request, reply, which)
      return
    }
    onAccepted?.(request, reply)
    done()
  }

  function refuseFull (request: FastifyRequest, reply: FastifyReply, which: 'user' | 'IP address'): void {
    limits.refused[which === 'user' ? 'user' : 'ip']++
    request.log.info({ limit: which }, `${what} refused: too many connections`)
    replyError(readableByOrigin(request, reply), 429, 'limit', `too many connections for this ${which}`)
  }

  /** The CORS preflight of a cross-origin request that sends `authorization` (the SDK does). */
  function preflight (headers: string) {
    return async (request: FastifyRequest, reply: FastifyReply) => {
      readableByOrigin(request, reply)
        .header('access-control-allow-methods', 'GET')
        .header('access-control-allow-headers', headers)
        .header('access-control-max-age', '600')
      return await reply.code(204).send()
    }
  }

  return { checkOrigin, readableByOrigin, authenticate, refuseFull, preflight }
}
