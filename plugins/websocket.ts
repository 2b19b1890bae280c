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

/** One forwarder per HTTP server to the first registration's @fastify/websocket: each routes every upgrade through the whole app, so two would route it twice. */
const relays = new WeakMap<Server, UpgradeListener>()

/** WebSocket support: the host's @fastify/websocket if registered first (adaptHostServer), else ours behind a relay it may take over. */
export async function registerWebsocket (fastify: FastifyInstance, opts: CitasWebsocketOptions): Promise<void> {
  if (fastify.hasDecorator('websocketServer')) {
    // Its clients are the host's too: citas-live's own are closed by the hub (1012) on close.
    adaptHostServer(fastify.websocketServer, opts, fastify.log)
    return
  }
  const server = fastify.server
  // A later registration's relay hears nothing: the first one's instance already routes every upgrade, to these routes too.
  const listenOn = new EventEmitter()
  const forward: UpgradeListener = relays.get(server) ?? ((req, socket, head) => { listenOn.emit('upgrade', req, socket, head) })
  if (!relays.has(server)) {
    server.on('upgrade', forward)
    relays.set(server, forward)
  }
  await fastify.register(fastifyWebsocket, {
    options: {
      maxPayload: opts.maxPayload,
      // Browsers cannot set headers: they offer the token as `Sec-WebSocket-Protocol: bearer, <token>`.
      handleProtocols: (protocols: Set<string>) => (protocols.has('bearer') ? 'bearer' : false),
      // The hub holds (and closes) every socket: ws's own set would be a second entry per socket.
      clientTracking: false,
      // The relay: @fastify/websocket listens to 'upgrade' on whatever it is given.
      server: listenOn as unknown as Server
    },
    // One function for every socket's errors (the route swaps in a shared listener where it can).
    errorHandler (err: Error, socket: WebSocket) {
      fastify.log.warn({ err }, 'websocket error')
      socket.terminate()
    },
    // The hub's preClose closes our sockets with 1012 (the default would use 1001).
    preClose (done) { done() }
  })
  fastify.addHook('onReady', async () => {
    const others = server.listeners('upgrade').filter((l) => l !== forward)
    if (others.length === 0) return
    if (others.every((l) => isFastifyWebsocketUpgrade(l))) {
      server.off('upgrade', forward) // the host's, registered after us, routes every upgrade
      fastify.log.debug('the host\'s @fastify/websocket routes upgrades: citas-live\'s relay is off')
    } else {
      fastify.log.warn('another listener handles WebSocket upgrades on this server: citas-live\'s /ws may not work')
    }
  })
  fastify.addHook('onClose', async () => {
    server.off('upgrade', forward)
    relays.delete(server)
  })
}

/** A host's server serves our paths as ours would: its maxPayload at least ours, and `bearer` answered on our paths (ws's public 'headers' event). */
export function adaptHostServer (wss: WebSocketServer, opts: CitasWebsocketOptions, log?: FastifyBaseLogger): void {
  const hostMax = serverMaxPayload(wss, log)
  if (hostMax !== undefined && hostMax !== 0 && hostMax < opts.maxPayload) {
    throw new Error(`citas-live: the host's @fastify/websocket accepts frames up to ${hostMax} bytes, but citas-live's /ws must accept ${opts.maxPayload} (a refresh carries a whole token): raise the host's options.maxPayload, or register citas-live first`)
  }
  wss.on('headers', (headers, req) => {
    const path = (req.url ?? '').split('?', 1)[0] as string
    if (!opts.paths().includes(path)) return
    const offered = (req.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim())
    if (!offered.includes('bearer')) return
    const at = headers.findIndex((h) => h.toLowerCase().startsWith('sec-websocket-protocol:'))
    if (at === -1) headers.push('Sec-WebSocket-Protocol: bearer')
    else headers[at] = 'Sec-WebSocket-Protocol: bearer'
  })
}
