import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { integerOption } from './options.js'
import { sweepExpiry } from '../services/expiry.js'
import { citasOf } from './namespace.js'

export interface ExpiryPluginOptions {
  /** How long before `exp` a socket gets `token_expiring`, in ms. Default 30000. */
  warningMs?: number
  /** Period of the one sweep over all sockets, in ms: a socket is closed at most this late. Default 1000. */
  sweepMs?: number
}

/** Token expiry on open sockets: one periodic sweep over every connection, no timer per socket. */
async function expiryPlugin (fastify: FastifyInstance, opts: ExpiryPluginOptions) {
  const warningMs = opts.warningMs ?? 30_000
  const sweepMs = opts.sweepMs ?? 1000
  integerOption('expiry', 'warningMs', warningMs, 0)
  integerOption('expiry', 'sweepMs', sweepMs, 10)
  const { hub } = citasOf(fastify)
  const timer = setInterval(() => {
    try {
      sweepExpiry(hub.connections, Date.now(), warningMs)
    } catch (err) {
      fastify.log.error({ err }, 'token expiry sweep failed')
    }
  }, sweepMs)
  timer.unref()
  fastify.addHook('preClose', async () => { clearInterval(timer) })
  fastify.addHook('onClose', async () => { clearInterval(timer) })
}

export default fp(expiryPlugin, { fastify: '5.x', name: 'citas-expiry', dependencies: ['citas-hub'] })
