import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { RawData, WebSocket } from 'ws'
import { tokenFromRequest } from '../plugins/auth.js'
import { isAppError } from '../services/errors.js'
import { canWatch, type Access, type Connection } from '../services/hub.js'
import {
  errorMessage, negocioOf, parseClientMessage, pongMessage, replyMessage,
  type ClientMessage
} from '../services/protocol.js'
import { wsDocs } from './schemas.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the /ws preValidation hook once the token is verified. */
    citasAccess: Access | null
  }
}

const OPEN = 1

function send (socket: WebSocket, payload: string): void {
  if (socket.readyState === OPEN) socket.send(payload)
}

/** GET /ws: token checked before the upgrade, then the subscribe/unsubscribe/ping protocol. */
export default async function wsRoutes (fastify: FastifyInstance) {
  const { hub, live, citasAuth, log } = fastify
  fastify.decorateRequest('citasAccess', null)

  async function authenticate (request: FastifyRequest, reply: FastifyReply) {
    try {
      request.citasAccess = citasAuth.accessOf(citasAuth.verify(tokenFromRequest(request)))
    } catch (err) {
      if (!isAppError(err)) throw err
      request.log.info({ reason: err.message }, 'websocket handshake refused')
      return reply.code(401).send({ statusCode: 401, code: 'unauthorized', error: 'Unauthorized', message: err.message })
    }
  }

  function subscribe (conn: Connection, msg: ClientMessage & { type: 'subscribe' }): void {
    const { channel, id } = msg
    const negocioId = negocioOf(channel) as string
    if (!canWatch(conn.access, negocioId)) {
      send(conn.socket, errorMessage('forbidden', `your token does not allow ${channel}`, id))
      return
    }
    hub.subscribe(conn, channel)
    send(conn.socket, replyMessage('subscribed', channel, id))
    const cached = live.cached(negocioId)
    if (cached !== undefined) {
      send(conn.socket, cached)
      return
    }
    // The recompute pushes to every subscriber of the channel, this one included.
    live.load(negocioId).catch((err: unknown) => {
      if (!conn.channels.has(channel)) return
      if (isAppError(err) && err.code === 'not_found') {
        hub.unsubscribe(conn, channel)
        send(conn.socket, errorMessage('not_found', err.message, id))
        return
      }
      log.error({ err, negocio_id: negocioId }, 'stats for subscribe failed')
      send(conn.socket, errorMessage(isAppError(err) ? err.code : 'internal', isAppError(err) ? err.message : 'internal error', id))
    })
  }

  function onMessage (conn: Connection, data: RawData, isBinary: boolean): void {
    if (isBinary) {
      send(conn.socket, errorMessage('bad_request', 'binary frames are not supported: send JSON text frames'))
      return
    }
    const parsed = parseClientMessage(data.toString())
    if (!parsed.ok) {
      send(conn.socket, errorMessage(parsed.code, parsed.message, parsed.id))
      return
    }
    const msg = parsed.message
    switch (msg.type) {
      case 'ping':
        send(conn.socket, pongMessage(msg.id))
        return
      case 'subscribe':
        subscribe(conn, msg)
        return
      case 'unsubscribe':
        hub.unsubscribe(conn, msg.channel)
        send(conn.socket, replyMessage('unsubscribed', msg.channel, msg.id))
    }
  }

  fastify.get('/ws', { websocket: true, preValidation: authenticate, schema: wsDocs }, (socket, request) => {
    // Listeners go on synchronously, before anything awaits, so no early frame is lost.
    const conn = hub.add(socket, request.citasAccess as Access)
    socket.on('message', (data, isBinary) => {
      try {
        onMessage(conn, data, isBinary)
      } catch (err) {
        log.error({ err }, 'websocket message handler failed')
        send(socket, errorMessage('internal', 'internal error'))
      }
    })
    socket.on('pong', () => { conn.alive = true })
    socket.on('close', () => hub.remove(conn))
  })
}
