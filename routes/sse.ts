import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { canWatch, type Access } from '../services/live/hub.js'
import { channelErrorMessage, negocioOf } from '../services/live/messages.js'
import { SseConnection, resumeVersions } from '../services/transports/sse.js'
import { citasOf } from '../plugins/namespace.js'
import { handshakeHooks } from './handshake.js'
import { sseDocs } from './schemas.js'
import { lazyChildLogger } from '../services/http/logging.js'
import { replyError } from '../services/http/errors.js'

/** GET /sse?channels=estadisticas:a,...: the live stats as Server-Sent Events, where proxies break WebSocket upgrades. */
async function sseRoutes (fastify: FastifyInstance, opts: { heartbeatMs: number, retryMs: number }) {
  const { hub, live, limits } = citasOf(fastify)
  const { checkOrigin, readableByOrigin, authenticate, refuseFull, preflight } = handshakeHooks(fastify, { what: 'event stream', protocolToken: false })

  /** The channels asked for, once each, in order; null once a refusal was sent. */
  function channelsOf (request: FastifyRequest, reply: FastifyReply, access: Access): string[] | null {
    // A refusal names its channel, so a client can drop it and ask for the others.
    const refuse = (status: 400 | 403, code: string, message: string, channel?: string): null => {
      request.log.info({ code }, `event stream refused: ${message}`)
      replyError(readableByOrigin(request, reply), status, code, message, channel === undefined ? {} : { channel })
      return null
    }
    const raw = (request.query as { channels?: string }).channels ?? ''
    const channels = [...new Set(raw.split(',').map(c => c.trim()).filter(c => c !== ''))]
    if (channels.length === 0) return refuse(400, 'bad_request', 'name the channels: ?channels=estadisticas:<negocio_id>[,estadisticas:<negocio_id>...]')
    if (channels.length > limits.maxSubscriptions) return refuse(400, 'limit', `at most ${limits.maxSubscriptions} channels per stream`)
    for (const channel of channels) {
      const negocioId = negocioOf(channel)
      if (negocioId === null) {
        return refuse(400, 'invalid_channel', `${JSON.stringify(channel.slice(0, 80))}: a channel is "estadisticas:<negocio_id>" with a negocio_id of 1-64 characters [A-Za-z0-9_-]`, channel.slice(0, 80))
      }
      if (!canWatch(access, negocioId)) return refuse(403, 'forbidden', `your token does not allow ${channel}`, channel)
    }
    return channels
  }

  const heartbeat = setInterval(() => { hub.sweep(conn => conn.transport === 'sse') }, opts.heartbeatMs).unref()
  fastify.addHook('onClose', async () => { clearInterval(heartbeat) })

  fastify.options('/sse', { onRequest: checkOrigin, schema: { hide: true } }, preflight('authorization, last-event-id'))

  // No HEAD route: a HEAD answered like the GET would be a stream without a body that never ends.
  fastify.get('/sse', { onRequest: checkOrigin, preValidation: authenticate, schema: sseDocs, exposeHeadRoute: false, childLoggerFactory: lazyChildLogger }, (request, reply) => {
    const access = request.citasAccess as Access
    const channels = channelsOf(request, reply, access)
    if (channels === null) return
    const key = request.citasUserKey
    const ip = limits.perIp.enabled ? limits.clientAddress(request) : ''
    // authenticate checked the counts; count for real now, where nothing can race it.
    const full = key !== null && !limits.perUser.acquire(key) ? 'user' : limits.perIp.acquire(ip) ? null : 'IP address'
    if (full !== null) {
      if (full === 'IP address' && key !== null) limits.perUser.release(key)
      refuseFull(request, reply, full)
      return
    }

    const resume = resumeVersions(request.headers['last-event-id'], limits.maxSubscriptions)
    const conn = hub.add(new SseConnection(request.raw.socket, access, channels, resume, opts.retryMs))
    reply.hijack()
    const release = (): void => {
      hub.remove(conn)
      if (key !== null) limits.perUser.release(key)
      limits.perIp.release(ip)
    }
    // A client gone before this point has no 'close' to come.
    if (request.raw.socket.destroyed) {
      release()
      return
    }
    request.raw.socket.once('close', release)
    const origin = request.headers.origin
    conn.start({
      'content-type': 'text/event-stream; charset=utf-8',
      // Proxies must neither cache nor transform (compress, buffer) the stream.
      'cache-control': 'no-cache, no-transform',
      'x-accel-buffering': 'no',
      ...(origin === undefined ? {} : { 'access-control-allow-origin': origin, vary: 'Origin' })
    })
    for (const channel of channels) {
      hub.subscribe(conn, channel)
      live.sendCurrent(conn, channel, (code, message) => { conn.send(channelErrorMessage(code, message, channel)) })
    }
  })
}

export default fp(sseRoutes, { fastify: '5.x', name: 'citas-sse', dependencies: ['citas-auth', 'citas-hub', 'citas-limits', 'citas-live-stats'], encapsulate: true })
