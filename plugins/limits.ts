import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { integerOption } from './options.js'
import rateLimit, { type RateLimitOptions } from '@fastify/rate-limit'
import { AppError } from '../services/errors.js'
import { createConnectionCounter, createOriginCheck } from '../services/limits.js'
import { createTokenBucket } from '../services/token-bucket.js'
import { citasOf, provide } from './namespace.js'

export interface LimitsPluginOptions {
  /** Origins allowed to open /ws from a browser (`https://app.example.com`). Unset: any origin (a warning is logged). */
  allowedOrigins?: string[]
  /** Subscriptions one connection may hold. Default 100. */
  maxSubscriptions?: number
  /** Open connections per token `sub`; 0 turns it off. Default 20. */
  maxConnectionsPerUser?: number
  /** Open connections per client IP; 0 (the default) turns it off. */
  maxConnectionsPerIp?: number
  /** Client messages per second per connection (token bucket refill). Default 10. */
  messageRate?: number
  /** Token bucket size: messages a connection may send at once. Default 20. */
  messageBurst?: number
  /** Messages over the rate in a row that close the connection with 1008. Default 50. */
  maxRefusedMessages?: number
  /** /notify/cita calls per caller (token `sub`, else IP) per window. Default 1200; 0 turns it off. */
  notifyMax?: number
  /** Window of notifyMax in ms. Default 60000. */
  notifyWindowMs?: number
}

export type Limits = ReturnType<typeof createLimits>

/** Close code for a connection that keeps sending over its message rate: policy violation. */
export const CLOSE_POLICY = 1008

function createLimits (opts: LimitsPluginOptions) {
  let isOriginAllowed: (origin: string | undefined) => boolean
  try {
    isOriginAllowed = createOriginCheck(opts.allowedOrigins)
  } catch (err) {
    throw new Error(`citas-live limits plugin: allowedOrigins: ${(err as Error).message}`)
  }
  const messageRate = opts.messageRate ?? 10
  if (!(messageRate > 0) || !Number.isFinite(messageRate)) throw new Error('citas-live limits plugin: messageRate must be a positive number')
  const messageBurst = integerOption('limits', 'messageBurst', opts.messageBurst ?? 20, 1)
  return {
    isOriginAllowed,
    restrictsOrigins: opts.allowedOrigins !== undefined,
    maxSubscriptions: integerOption('limits', 'maxSubscriptions', opts.maxSubscriptions ?? 100, 1),
    maxRefusedMessages: integerOption('limits', 'maxRefusedMessages', opts.maxRefusedMessages ?? 50, 1),
    perUser: createConnectionCounter(integerOption('limits', 'maxConnectionsPerUser', opts.maxConnectionsPerUser ?? 20, 0)),
    perIp: createConnectionCounter(integerOption('limits', 'maxConnectionsPerIp', opts.maxConnectionsPerIp ?? 0, 0)),
    messageBucket: () => createTokenBucket(messageRate, messageBurst),
    notifyMax: integerOption('limits', 'notifyMax', opts.notifyMax ?? 1200, 0),
    notifyWindowMs: integerOption('limits', 'notifyWindowMs', opts.notifyWindowMs ?? 60_000, 1)
  }
}

/** The abuse limits of /ws and /notify/cita, as one object the routes read. */
async function limitsPlugin (fastify: FastifyInstance, opts: LimitsPluginOptions) {
  const limits = createLimits(opts)
  if (!limits.restrictsOrigins) {
    fastify.log.warn('allowed origins are not set: WebSocket handshakes from any Origin are accepted (set ALLOWED_ORIGINS)')
  }
  provide(fastify, 'limits', limits)
}

export default fp(limitsPlugin, { fastify: '5.x', name: 'citas-limits' })

declare module 'fastify' {
  interface FastifyRequest {
    /** Who called /notify/cita (the service token's `sub`), set once the token is verified. */
    citasCaller: string | null
  }
}

/**
 * Registers @fastify/rate-limit in the calling scope (no global limit) and returns the route
 * `config.rateLimit` for /notify/cita: per caller (token `sub`, else IP), counted after
 * authentication so anonymous calls cannot use up a service's budget. Null when turned off.
 */
export async function registerNotifyRateLimit (fastify: FastifyInstance): Promise<RateLimitOptions | null> {
  const { limits } = citasOf(fastify)
  if (!fastify.hasRequestDecorator('citasCaller')) fastify.decorateRequest('citasCaller', null)
  if (limits.notifyMax === 0) return null
  await fastify.register(rateLimit, { global: false })
  return {
    max: limits.notifyMax,
    timeWindow: limits.notifyWindowMs,
    hook: 'preHandler',
    keyGenerator: (request) => request.citasCaller !== null ? `sub:${request.citasCaller}` : `ip:${request.ip}`,
    errorResponseBuilder: (_request, context) =>
      new AppError('rate_limited', `rate limit exceeded, retry in ${context.after}`)
  }
}
