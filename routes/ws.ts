import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { RawData, WebSocket } from 'ws'
import { tokenFromRequest } from '../plugins/auth.js'
import { isAppError } from '../services/errors.js'
import { canWatch, type Access, type Connection } from '../services/hub.js'
import {
  errorMessage, negocioOf, parseClientMessage, pongMessage, replyMessage,
  type ClientMessage
} from '../services/protocol.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the /ws preValidation hook once the token is verified. */
    citasAccess: Access | null
  }
}

const OPEN = 1

/** The hub connection of a socket, so every socket shares one set of listeners instead of closures. */
const kConn = Symbol('citas-live connection')
type LiveSocket = WebSocket & { [kConn]: Connection }
const connOf = (socket: WebSocket): Connection => (socket as LiveSocket)[kConn]

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

  function onSocketMessage (this: WebSocket, data: RawData, isBinary: boolean): void {
    try {
      onMessage(connOf(this), data, isBinary)
    } catch (err) {
      log.error({ err }, 'websocket message handler failed')
      send(this, errorMessage('internal', 'internal error'))
    }
  }
  function onSocketPong (this: WebSocket): void { connOf(this).alive = true }
  function onSocketClose (this: WebSocket): void { hub.remove(connOf(this)) }
  function onSocketError (this: WebSocket, err: Error): void {
    log.warn({ err }, 'websocket error')
    this.terminate()
  }

  fastify.get('/ws', { websocket: true, preValidation: authenticate }, (socket, request) => {
    // Listeners go on synchronously, before anything awaits, so no early frame is lost.
    ;(socket as LiveSocket)[kConn] = hub.add(socket, request.citasAccess as Access)
    // Nothing of the upgrade request may outlive it: @fastify/websocket's per-socket error
    // listener closes over the request and reply, and the TCP socket still holds the
    // ServerResponse used to route the upgrade (and through it the request).
    socket.removeAllListeners('error')
    socket.on('error', onSocketError)
    const raw = (socket as unknown as { _socket?: Socket & { _httpMessage?: ServerResponse | null } })._socket
    if (raw?._httpMessage != null) raw._httpMessage.detachSocket(raw)
    socket.on('message', onSocketMessage)
    socket.on('pong', onSocketPong)
    socket.on('close', onSocketClose)
  })
}
