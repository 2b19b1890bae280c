import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import type { RawData, WebSocket } from 'ws'
import { isAppError } from '../services/http/errors.js'
import { canWatch, type Access } from '../services/live/hub.js'
import { WsConnection } from '../services/transports/websocket.js'
import {
  errorMessage, negocioOf, parseClientMessage, pongMessage, refreshedMessage, replyMessage, revokedMessage,
  type ClientMessage
} from '../services/live/messages.js'
import { CLOSE } from '../protocol.js'
import { citasOf } from '../plugins/namespace.js'
import { handshakeHooks } from './handshake.js'
import { checkSocket } from '../services/adapters/ws.js'
import { releaseUpgrade } from '../services/adapters/fastify-websocket.js'
import { wsDocs } from './schemas.js'
import { lazyChildLogger } from '../services/http/logging.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** The handshake's `reply.raw`, for releaseUpgrade. */
    citasUpgradeResponse: unknown
  }
}

/** Largest `refresh` frame: an accepted token can be as long as Node's header limit (16 KiB). */
export const MAX_REFRESH_FRAME = 16 * 1024 + 512

/** The socket's connection, so every socket shares one set of listeners instead of closures. */
const kConn = Symbol('citas-live connection')

type LiveSocket = WebSocket & { [kConn]: WsConnection }
const connOf = (socket: WebSocket): WsConnection => (socket as LiveSocket)[kConn]

/** `maxPayload`: the largest client frame in bytes, `refresh` frames excepted (up to MAX_REFRESH_FRAME). */
async function wsRoutes (fastify: FastifyInstance, { maxPayload }: { maxPayload: number }) {
  const { hub, live, auth: citasAuth, limits } = citasOf(fastify)
  const { log } = fastify
  fastify.decorateRequest('citasUpgradeResponse', null)

  const { checkOrigin, authenticate, preflight } = handshakeHooks(fastify, {
    what: 'websocket handshake',
    protocolToken: true,
    onAccepted: (request, reply) => { request.citasUpgradeResponse = reply.raw }
  })

  function subscribe (conn: WsConnection, msg: ClientMessage & { type: 'subscribe' }): void {
    const { channel, id } = msg
    if (!canWatch(conn.access, negocioOf(channel) as string)) {
      conn.send(errorMessage('forbidden', `your token does not allow ${channel}`, id))
      return
    }
    if (!conn.channels.has(channel) && conn.channels.size >= limits.maxSubscriptions) {
      conn.send(errorMessage('limit', `at most ${limits.maxSubscriptions} subscriptions per connection`, id))
      return
    }
    hub.subscribe(conn, channel)
    // The reply and the current stats (when cached) leave in one write.
    conn.batch(() => {
      conn.send(replyMessage('subscribed', channel, id))
      live.sendCurrent(conn, channel, (code, message) => { conn.send(errorMessage(code, message, id)) })
    })
  }

  function refresh (conn: WsConnection, msg: ClientMessage & { type: 'refresh' }): void {
    let access: Access
    try {
      access = citasAuth.accessOf(citasAuth.verify(msg.token))
    } catch (err) {
      if (!isAppError(err)) throw err
      conn.send(errorMessage('unauthorized', err.message, msg.id))
      return
    }
    // Only a `sub` in both tokens proves they are the same user's; without it, reconnect instead.
    if (access.sub === undefined || conn.access.sub === undefined) {
      conn.send(errorMessage('forbidden', 'a token without sub cannot be refreshed: reconnect with the new token', msg.id))
      return
    }
    if (access.sub !== conn.access.sub) {
      conn.send(errorMessage('forbidden', 'the new token belongs to another user', msg.id))
      return
    }
    conn.access = access
    conn.expiryNoticeFor = 0
    conn.send(refreshedMessage(access.exp, msg.id))
    for (const channel of [...conn.channels]) {
      if (canWatch(access, negocioOf(channel) as string)) continue
      hub.unsubscribe(conn, channel)
      conn.send(revokedMessage(channel))
    }
  }

  function onMessage (conn: WsConnection, data: RawData, isBinary: boolean): void {
    // ws lets frames up to MAX_REFRESH_FRAME through (more, on a host's server): past maxPayload only a refresh may.
    const size = (data as Buffer).length
    if (size > maxPayload && (size > MAX_REFRESH_FRAME || isBinary || !isRefresh(data))) {
      conn.close(CLOSE.tooBig.code, CLOSE.tooBig.reason)
      return
    }
    if (isBinary) {
      conn.send(errorMessage('bad_request', 'binary frames are not supported: send JSON text frames'))
      return
    }
    const parsed = parseClientMessage(data.toString())
    if (!parsed.ok) {
      conn.send(errorMessage(parsed.code, parsed.message, parsed.id))
      return
    }
    const msg = parsed.message
    if (msg.type === 'ping') conn.send(pongMessage(msg.id))
    else if (msg.type === 'subscribe') subscribe(conn, msg)
    else if (msg.type === 'refresh') refresh(conn, msg)
    else if (msg.type === 'unsubscribe') {
      hub.unsubscribe(conn, msg.channel)
      conn.send(replyMessage('unsubscribed', msg.channel, msg.id))
    }
  }

  function onSocketMessage (this: WebSocket, data: RawData, isBinary: boolean): void {
    const conn = connOf(this)
    if (!limits.takeMessage(conn)) {
      if (conn.refused === 1) conn.send(errorMessage('rate_limited', 'too many messages: slow down'))
      else if (conn.refused > limits.maxRefusedMessages) this.close(CLOSE.rateExceeded.code, CLOSE.rateExceeded.reason)
      return
    }
    try {
      onMessage(conn, data, isBinary)
    } catch (err) {
      log.error({ err }, 'websocket message handler failed')
      conn.send(errorMessage('internal', 'internal error'))
    }
  }
  function onSocketPong (this: WebSocket): void { connOf(this).alive = true }
  function onSocketClose (this: WebSocket): void {
    const conn = connOf(this)
    hub.remove(conn)
    if (conn.userKey !== null) limits.perUser.release(conn.userKey)
    if (conn.ip !== null) limits.perIp.release(conn.ip)
  }
  function onSocketError (this: WebSocket, err: Error): void {
    log.warn({ err }, 'websocket error')
    this.terminate()
  }

  // The probe's Authorization header makes browsers preflight; @fastify/cors would hook every upgrade or add a clashing `OPTIONS *`.
  fastify.options('/ws', { onRequest: checkOrigin, schema: { hide: true } }, preflight('authorization'))

  fastify.get('/ws', { websocket: true, onRequest: checkOrigin, preValidation: authenticate, schema: wsDocs, childLoggerFactory: lazyChildLogger }, (socket, request) => {
    // Listeners go on synchronously, before anything awaits, so no early frame is lost.
    const ip = limits.perIp.enabled ? limits.clientAddress(request) : ''
    // The handshake checked the counts; concurrent handshakes may still overshoot, so count for real here.
    const key = request.citasUserKey
    const userCounted = key === null || limits.perUser.acquire(key)
    const ipCounted = userCounted && limits.perIp.acquire(ip)
    const conn = hub.add(new WsConnection(socket, request.citasAccess as Access, limits.messageBurst, userCounted ? key : null, ipCounted ? ip : null))
    ;(socket as LiveSocket)[kConn] = conn
    // Nothing of the upgrade request should outlive it (services/adapters/fastify-websocket.ts).
    releaseUpgrade(socket, request, request.citasUpgradeResponse, onSocketError, log)
    request.citasUpgradeResponse = null
    checkSocket(socket, log)
    socket.on('message', onSocketMessage)
    socket.on('pong', onSocketPong)
    socket.on('close', onSocketClose)
    if (!userCounted || !ipCounted) socket.close(CLOSE.tooManyConnections.code, CLOSE.tooManyConnections.reason)
  })
}

function isRefresh (data: RawData): boolean {
  try {
    const parsed: unknown = JSON.parse(data.toString())
    return typeof parsed === 'object' && parsed !== null && (parsed as { type?: unknown }).type === 'refresh'
  } catch {
    return false
  }
}

export default fp(wsRoutes, { fastify: '5.x', name: 'citas-ws', dependencies: ['@fastify/websocket', 'citas-auth', 'citas-hub', 'citas-limits', 'citas-live-stats'], encapsulate: true })
