import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { Type, type Static } from '@sinclair/typebox'
import { Int, resolveOptions } from './options.js'
import { createHub } from '../services/live/hub.js'
import { provide } from './namespace.js'
import { CLOSE } from '../protocol.js'

export const HubOptions = Type.Object({
  heartbeatMs: Int(10, 30_000, { description: 'Heartbeat period in ms: a peer that has not answered one ping by the next is terminated.' }),
  maxBufferedBytes: Int(1024, 65_536, { description: 'Per-socket send buffer bound in bytes; over it only the newest stats per channel are kept.' }),
  stallTimeoutMs: Int(10, 30_000, { description: 'A socket that stays over the bound this long (ms) is closed with 1013.' }),
  closeTimeoutMs: Int(0, 5000, { description: 'On close, sockets that have not finished the close handshake after this long (ms) are cut.' })
})
export type HubPluginOptions = Partial<Static<typeof HubOptions>>

async function hubPlugin (fastify: FastifyInstance, options: HubPluginOptions) {
  const { heartbeatMs, maxBufferedBytes, stallTimeoutMs, closeTimeoutMs } = resolveOptions('hub', HubOptions, options)
  const hub = createHub({ maxBufferedBytes, stallTimeoutMs })
  provide(fastify, 'hub', hub)

  const timer = setInterval(() => { hub.sweep(conn => conn.transport === 'websocket') }, heartbeatMs).unref()
  let cutTimer: ReturnType<typeof setTimeout> | undefined

  fastify.addHook('preClose', async () => {
    clearInterval(timer)
    hub.closeAll(CLOSE.restart.code, CLOSE.restart.reason)
    // A peer that never answers the close frame must not hold the shutdown up: one timer for all.
    if (hub.connectionCount > 0) cutTimer = setTimeout(hub.terminateAll, closeTimeoutMs).unref()
  })
  fastify.addHook('onClose', async () => {
    clearInterval(timer)
    clearTimeout(cutTimer)
    hub.stop()
  })
}

export default fp(hubPlugin, { fastify: '5.x', name: 'citas-hub' })
