/**
 * The internals of @fastify/websocket (pinned exactly in package.json) and Node's HTTP server that
 * citas-live uses, behind checks.
 *
 * 1. Releasing the upgrade request (`upgrade-release`, once per connection; the idle benchmark's
 *    memory per connection). Two things keep the whole upgrade request (Fastify's Request and
 *    Reply, the IncomingMessage and ServerResponse, a child logger, the headers) alive as long as
 *    the socket: the per-socket 'error' listener @fastify/websocket adds, a closure over request
 *    and reply (even with its public `errorHandler` option), and the TCP socket's reference to the
 *    ServerResponse @fastify/websocket routes the upgrade with. The listener is swapped for one
 *    shared by all sockets, and the response is detached with `ServerResponse#detachSocket`
 *    (not in Node's documentation). Public path: both stay; errors still go through the
 *    `errorHandler` option, at the cost of a few KiB per connection.
 * 2. Recognizing a host's @fastify/websocket among the server's 'upgrade' listeners, at ready, by
 *    the name of its listener function. Not recognized: plugins/websocket.ts warns.
 */
import { ServerResponse } from 'node:http'
import type { FastifyRequest } from 'fastify'
import type { WebSocket } from 'ws'
import { guard, type AdapterLog } from './guard.js'

const releaseGuard = guard('upgrade-release', 'every socket keeps its upgrade request (Fastify request and reply, HTTP request and response, headers): a few KiB more per connection')

/**
 * Lets the upgrade request of a new socket be collected: @fastify/websocket's per-socket error
 * listener is replaced by `onError` (one function for every socket) and the upgrade's response
 * (the `reply.raw` of the handshake) is detached from the TCP socket. All or nothing: returns
 * false, and changes nothing, when either is not as expected (logged once).
 */
export function releaseUpgrade (socket: WebSocket, request: FastifyRequest, response: unknown, onError: (this: WebSocket, err: Error) => void, log?: AdapterLog): boolean {
  if (releaseGuard.public) {
    releaseGuard.fallback('forced', log)
    return false
  }
  // @fastify/websocket adds its listener right before it calls the route's handler: the only one then.
  const listeners = socket.listeners('error')
  if (listeners.length !== 1 || listeners[0] === onError) {
    releaseGuard.fallback(`${listeners.length} error listeners on a new socket, expected @fastify/websocket's one`, log)
    return false
  }
  const tcp = request.raw.socket
  if (!(response instanceof ServerResponse) || typeof response.detachSocket !== 'function' || tcp == null || response.socket !== tcp) {
    releaseGuard.fallback('the upgrade\'s response does not hold the TCP socket', log)
    return false
  }
  socket.off('error', listeners[0] as (err: Error) => void)
  socket.on('error', onError)
  response.detachSocket(tcp)
  return true
}

/**
 * Whether an 'upgrade' listener of the HTTP server is @fastify/websocket's, which routes every
 * upgrade through the whole Fastify app: known by the name of its function (`onUpgrade` in
 * @fastify/websocket 11).
 */
export function isFastifyWebsocketUpgrade (listener: { readonly name: string }): boolean {
  return listener.name === 'onUpgrade'
}
