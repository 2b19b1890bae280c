import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { Type, type Static } from '@sinclair/typebox'
import { fromOption, Int, resolveOptions } from './options.js'
import { clientAddress, connectionCapacity, openFiles, createConnectionCounter, createNetworkMatcher, createOriginCheck } from '../services/http/limits.js'
import { takeToken, type BucketState } from '../services/transports/token-bucket.js'
import { provide } from './namespace.js'

export const LimitsOptions = Type.Object({
  allowedOrigins: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { description: 'Origins allowed to open /ws from a browser (https://app.example.com). Unset: any origin (a warning is logged).' })),
  maxSubscriptions: Int(1, 100, { description: 'Subscriptions one connection may hold.' }),
  maxConnectionsPerUser: Int(0, 20, { description: 'Open connections per token `sub`; 0 turns it off.' }),
  maxConnectionsPerIp: Int(0, 0, { description: 'Open connections per client IP; 0 turns it off.' }),
  maxConnections: Int(0, 0, { description: 'Open connections (WebSocket and SSE) this process takes; more get 503 with Retry-After. 0: what the open-files limit leaves after 512 files kept for the database, the bus and requests in flight.' }),
  messageRate: Type.Number({ exclusiveMinimum: 0, maximum: 1e6, default: 10, description: 'Client messages per second per connection (token bucket refill).' }),
  messageBurst: Int(1, 20, { description: 'Token bucket size: messages a connection may send at once.' }),
  maxRefusedMessages: Int(1, 50, { description: 'Messages over the rate in a row that close the connection with 1008.' }),
  notifyMax: Int(0, 1200, { description: '/notify/cita calls per caller (token `sub`, else IP) per window; 0 turns it off.' }),
  notifyWindowMs: Int(1, 60_000, { description: 'Window of notifyMax in ms.' }),
  trustedProxies: Type.Array(Type.String({ minLength: 1 }), {
    default: [],
    description: 'Addresses or CIDRs of the proxies in front of the server: a request from one of them comes from the rightmost X-Forwarded-For address not added by one of them (per-IP limits, notifyTrustedNetworks). Empty: the socket\'s address, whatever the headers say.'
  })
})
export type LimitsPluginOptions = Partial<Static<typeof LimitsOptions>>

export type Limits = ReturnType<typeof createLimits>

declare module './namespace.js' {
  interface CitasLive { limits: Limits }
}

function createLimits (opts: Static<typeof LimitsOptions>) {
  const isProxy = fromOption('limits', 'trustedProxies', () => createNetworkMatcher(opts.trustedProxies))
  const { messageRate, messageBurst } = opts
  return {
    clientAddress: (request: FastifyRequest): string => clientAddress(request.raw.socket?.remoteAddress, request.headers['x-forwarded-for'], isProxy),
    isOriginAllowed: fromOption('limits', 'allowedOrigins', () => createOriginCheck(opts.allowedOrigins)),
    maxSubscriptions: opts.maxSubscriptions,
    maxRefusedMessages: opts.maxRefusedMessages,
    perUser: createConnectionCounter(opts.maxConnectionsPerUser),
    perIp: createConnectionCounter(opts.maxConnectionsPerIp),
    capacity: connectionCapacity(opts.maxConnections, openFiles()),
    refused: { capacity: 0, user: 0, ip: 0 },
    messageBurst,
    takeMessage: (bucket: BucketState): boolean => takeToken(bucket, messageRate, messageBurst, Date.now()),
    notifyMax: opts.notifyMax,
    notifyWindowMs: opts.notifyWindowMs
  }
}

/** The abuse limits of /ws and /notify/cita, as one object the routes read. */
async function limitsPlugin (fastify: FastifyInstance, options: LimitsPluginOptions) {
  const opts = resolveOptions('limits', LimitsOptions, options)
  const limits = createLimits(opts)
  if (opts.maxConnections > limits.capacity) {
    fastify.log.warn({ maxConnections: opts.maxConnections, capacity: limits.capacity }, 'maxConnections is more than the open-files limit leaves: raise the limit (ulimit -n), or clients past it would starve the database connections')
  }
  if (opts.allowedOrigins === undefined) fastify.log.warn('allowed origins are not set: WebSocket handshakes from any Origin are accepted (set ALLOWED_ORIGINS)')
  provide(fastify, 'limits', limits)
}

export default fp(limitsPlugin, { fastify: '5.x', name: 'citas-limits' })
