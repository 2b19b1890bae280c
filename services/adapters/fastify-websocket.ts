// Internals of @fastify/websocket (pinned exactly) and Node's HTTP server. `upgrade-release`: the socket's 'error' listener (a
// closure over request and reply) is swapped for a shared one and the TCP socket's ServerResponse detached (undocumented
// `detachSocket`), so the upgrade request can go: 0.54x RSS per idle connection (4.74 vs 8.78 KiB). Public path: both stay.
import { ServerResponse } from 'node:http'
import type { FastifyRequest } from 'fastify'
import type { WebSocket } from 'ws'
import { guard, type AdapterLog } from './guard.js'

const releaseGuard = guard('upgrade-release', 'every socket keeps its upgrade request (Fastify request and reply, HTTP request and response, headers): a few KiB more per connection')

/** Lets a new socket's upgrade request be collected. All or nothing: false, changing nothing, when the shape is not the known one. */
export function releaseUpgrade (socket: WebSocket, request: FastifyRequest, response: unknown, onError: (this: WebSocket, err: Error) => void, log?: AdapterLog): boolean {
  if (releaseGuard.onPublicPath(log)) return false
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

/** Whether an 'upgrade' listener is @fastify/websocket's (`onUpgrade` in version 11), which routes upgrades through the whole app. */
export function isFastifyWebsocketUpgrade (listener: { readonly name: string }): boolean {
  return listener.name === 'onUpgrade'
}
