import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { createHub } from '../services/hub.js'

export interface HubPluginOptions {
  /** Heartbeat period in ms: a peer that has not answered one ping by the next is terminated. Default 30000. */
  heartbeatMs?: number
}

declare module 'fastify' {
  interface FastifyInstance {
    hub: ReturnType<typeof createHub>
  }
}

/** Close code sent to every client on shutdown: "service restart", so clients reconnect. */
export const CLOSE_RESTART = 1012

async function hubPlugin (fastify: FastifyInstance, opts: HubPluginOptions) {
  const heartbeatMs = opts.heartbeatMs ?? 30_000
  if (!Number.isInteger(heartbeatMs) || heartbeatMs < 10) {
    throw new Error('citas-live hub plugin: heartbeatMs must be an integer of at least 10')
  }
  const hub = createHub()
  fastify.decorate('hub', hub)

  const timer = setInterval(hub.sweep, heartbeatMs)
  timer.unref()

  fastify.addHook('preClose', async () => {
    clearInterval(timer)
    hub.closeAll(CLOSE_RESTART, 'server restarting')
  })
  fastify.addHook('onClose', async () => { clearInterval(timer) })
}

export default fp(hubPlugin, { fastify: '5.x', name: 'citas-hub' })
