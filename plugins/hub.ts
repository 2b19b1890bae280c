import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { integerOption } from './options.js'
import { createHub } from '../services/hub.js'
import { provide } from './namespace.js'

export interface HubPluginOptions {
  /** Heartbeat period in ms: a peer that has not answered one ping by the next is terminated. Default 30000. */
  heartbeatMs?: number
  /** Per-socket send buffer bound in bytes; over it only the newest stats per channel are kept. Default 65536. */
  maxBufferedBytes?: number
  /** A socket that stays over the bound this long is closed with 1013. Default 30000. */
  stallTimeoutMs?: number
  /** On close, sockets that have not finished the close handshake after this long are cut. Default 5000. */
  closeTimeoutMs?: number
}

/** Close code sent to every client on shutdown: "service restart", so clients reconnect. */
export const CLOSE_RESTART = 1012

async function hubPlugin (fastify: FastifyInstance, opts: HubPluginOptions) {
  const heartbeatMs = integerOption('hub', 'heartbeatMs', opts.heartbeatMs ?? 30_000, 10)
  const hub = createHub({
    maxBufferedBytes: integerOption('hub', 'maxBufferedBytes', opts.maxBufferedBytes ?? 65_536, 1024),
    stallTimeoutMs: integerOption('hub', 'stallTimeoutMs', opts.stallTimeoutMs ?? 30_000, 10)
  })
  const closeTimeoutMs = integerOption('hub', 'closeTimeoutMs', opts.closeTimeoutMs ?? 5000, 0)
  provide(fastify, 'hub', hub)

  const timer = setInterval(hub.sweep, heartbeatMs)
  timer.unref()
  let cutTimer: ReturnType<typeof setTimeout> | undefined

  fastify.addHook('preClose', async () => {
    clearInterval(timer)
    hub.closeAll(CLOSE_RESTART, 'server restarting')
    // A peer that never answers the close frame must not hold the shutdown up: one timer for all.
    if (hub.connectionCount > 0) {
      cutTimer = setTimeout(hub.terminateAll, closeTimeoutMs)
      cutTimer.unref()
    }
  })
  fastify.addHook('onClose', async () => {
    clearInterval(timer)
    clearTimeout(cutTimer)
    hub.stop()
  })
}

export default fp(hubPlugin, { fastify: '5.x', name: 'citas-hub' })
