import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { Type, type Static } from '@sinclair/typebox'
import { Int, resolveOptions } from './options.js'
import { sweepExpiry } from '../services/live/expiry.js'
import { citasOf } from './namespace.js'

export const ExpiryOptions = Type.Object({
  warningMs: Int(0, 30_000, { description: 'How long before `exp` a socket gets `token_expiring`, in ms.' }),
  sweepMs: Int(10, 1000, { description: 'Period of the one sweep over all sockets, in ms: a socket is closed at most this late.' })
})
export type ExpiryPluginOptions = Partial<Static<typeof ExpiryOptions>>

/** Token expiry on open sockets: one periodic sweep over every connection, no timer per socket. */
async function expiryPlugin (fastify: FastifyInstance, options: ExpiryPluginOptions) {
  const { warningMs, sweepMs } = resolveOptions('expiry', ExpiryOptions, options)
  const { hub } = citasOf(fastify)
  const timer = setInterval(() => {
    try {
      sweepExpiry(hub.connections, Date.now(), warningMs)
    } catch (err) {
      fastify.log.error({ err }, 'token expiry sweep failed')
    }
  }, sweepMs).unref()
  fastify.addHook('preClose', async () => { clearInterval(timer) })
  fastify.addHook('onClose', async () => { clearInterval(timer) })
}

export default fp(expiryPlugin, { fastify: '5.x', name: 'citas-expiry', dependencies: ['citas-hub'] })
