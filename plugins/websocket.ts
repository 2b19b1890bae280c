import { EventEmitter } from 'node:events'
import type { IncomingMessage, Server } from 'node:http'
import type { Duplex } from 'node:stream'
import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import fastifyWebsocket from '@fastify/websocket'
import type { WebSocket, WebSocketServer } from 'ws'
import { serverMaxPayload } from '../services/adapters/ws.js'
import { isFastifyWebsocketUpgrade } from '../services/adapters/fastify-websocket.js'

export interface CitasWebsocketOptions {
  /** Largest frame `ws` must accept on citas-live's sockets (the route holds most frames to less). */
  maxPayload: number
  /** Paths of citas-live's WebSocket routes: their handshakes select the `bearer` subprotocol. */
  paths: () => readonly string[]
}

type UpgradeListener = (req: IncomingMessage, socket: Duplex, head: Buffer) => void

/**
 * One forwarder per HTTP server from its 'upgrade' event to the @fastify/websocket instance of the
 * first citas-live registration: every @fastify/websocket instance routes each upgrade through the
 * whole app, so two listening at once would route it twice.
 */
const relays = new WeakMap<Server, { relay: EventEmitter, forward: UpgradeListener }>()

/** Browsers cannot set headers: they offer the token as `Sec-WebSocket-Protocol: bearer, <token>`. */
const selectBearer = (protocols: Set<string>): string | false => (protocols.has('bearer') ? 'bearer' : false)

/**
 * WebSocket support for citas-live's routes, whatever the host app did:
 *
 * - No @fastify/websocket above: one of citas-live's own in its scope, with its settings. It hears
 *   upgrades through a relay; if the host registers its own @fastify/websocket later (which routes
 *   every upgrade, ours included), the relay is detached at ready so no upgrade is routed twice.
 * - The host registered @fastify/websocket first: its server carries citas-live's sockets too (a
 *   second one would wrap every route twice). Its `maxPayload` must be at least citas-live's
 *   (checked at boot where it can be read: citas-live holds frames to its own limit itself,
 *   closing with 1009), and the handshakes of citas-live's paths answer with the `bearer`
 *   subprotocol whatever the host's `handleProtocols` chose; the host's paths keep its choice.
 *   Returns 'host' then.
 */
export async function registerWebsocket (fastify: FastifyInstance, opts: CitasWebsocketOptions): Promise<'own' | 'host'> {
  if (fastify.hasDecorator('websocketServer')) {
    // Its clients are the host's too: citas-live's own are closed by the hub (1012) on close.
    adaptHostServer(fastify.websocketServer, opts, fastify.log)
    return 'host'
  }
  const server = fastify.server
  let entry = relays.get(server)
  let listenOn: EventEmitter
  if (entry === undefined) {
    const relay = new EventEmitter()
    const forward: UpgradeListener = (req, socket, head) => { relay.emit('upgrade', req, socket, head) }
    server.on('upgrade', forward)
    entry = { relay, forward }
    relays.set(server, entry)
    listenOn = relay
  } else {
    // Another citas-live registration's instance already routes every upgrade, to these routes too.
    listenOn = new EventEmitter()
  }
  const { forward } = entry
  await fastify.register(fastifyWebsocket, {
    options: {
      maxPayload: opts.maxPayload,
      handleProtocols: selectBearer,
      // The hub holds every socket the routes accept and closes them on shutdown (1012): ws's own
      // set of clients would be a second entry and a 'close' listener per socket, for nothing.
      clientTracking: false,
      // Not an http.Server: @fastify/websocket listens to 'upgrade' on whatever it is given.
      server: listenOn as unknown as Server
    },
    // One function for every socket's errors (the default logs each at error level). The route
    // swaps @fastify/websocket's per-socket listener for its own where it can; this covers the rest.
    errorHandler (err: Error, socket: WebSocket) {
      fastify.log.warn({ err }, 'websocket error')
      socket.terminate()
    },
    // Not the default, which closes the server's tracked clients (none) with 1001: the hub's
    // preClose closes citas-live's sockets with 1012 and cuts the ones that do not answer.
    preClose (done) { done() }
  })
  fastify.addHook('onReady', async () => {
    const others = server.listeners('upgrade').filter((l) => l !== forward)
    if (others.length === 0) return
    if (others.every((l) => isFastifyWebsocketUpgrade(l))) {
      // The host's @fastify/websocket, registered after citas-live, routes upgrades for every route.
      server.off('upgrade', forward)
      fastify.log.debug('the host\'s @fastify/websocket routes upgrades: citas-live\'s relay is off')
    } else {
      fastify.log.warn('another listener handles WebSocket upgrades on this server: citas-live\'s /ws may not work')
    }
  })
  fastify.addHook('onClose', async () => {
    server.off('upgrade', forward)
    relays.delete(server)
  })
  return 'own'
}

type HandshakeHeadersListener = (headers: string[], req: IncomingMessage) => void

/**
 * Makes a host's WebSocket server serve citas-live's paths as citas-live would: the maxPayload of
 * the host's server must be at least citas-live's (read through the ws adapter; when it cannot
 * be read, the adapter says so once and nothing is checked), and on citas-live's paths the
 * handshake answers with the `bearer` subprotocol the browser offered, set in ws's public
 * 'headers' event after the host's `handleProtocols` (which keeps deciding for its own paths).
 */
export function adaptHostServer (wss: WebSocketServer, opts: Pick<CitasWebsocketOptions, 'maxPayload' | 'paths'>, log?: FastifyBaseLogger): void {
  const hostMax = serverMaxPayload(wss, log)
  if (hostMax !== undefined && hostMax !== 0 && hostMax < opts.maxPayload) {
    throw new Error(`citas-live: the host's @fastify/websocket accepts frames up to ${hostMax} bytes, but citas-live's /ws must accept ${opts.maxPayload} (a refresh carries a whole token): raise the host's options.maxPayload, or register citas-live first`)
  }
  const onHeaders: HandshakeHeadersListener = (headers, req) => {
    const path = (req.url ?? '').split('?', 1)[0] as string
    if (!opts.paths().includes(path)) return
    const offered = offeredProtocols(req.headers['sec-websocket-protocol'])
    if (!offered.has('bearer')) return
    const at = headers.findIndex((h) => h.toLowerCase().startsWith('sec-websocket-protocol:'))
    if (at === -1) headers.push('Sec-WebSocket-Protocol: bearer')
    else headers[at] = 'Sec-WebSocket-Protocol: bearer'
  }
  wss.on('headers', onHeaders)
}

/** The subprotocols a handshake offers (`Sec-WebSocket-Protocol: a, b`). */
function offeredProtocols (header: string | undefined): Set<string> {
  return new Set((header ?? '').split(',').map((p) => p.trim()).filter((p) => p !== ''))
}
