import fp from 'fastify-plugin'
import { createVerifier } from 'fast-jwt'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { provide } from './namespace.js'
import { AppError } from '../services/errors.js'
import { isNegocioId } from '../services/protocol.js'
import type { Access } from '../services/hub.js'

export interface ClaimNames {
  /** Claim holding one negocio_id (string). Default `negocio_id`. */
  negocioId?: string
  /** Claim holding several negocio_ids (string array). Default `negocios`. */
  negocios?: string
  /** Claim holding the role. Default `role`. */
  role?: string
}

export interface AuthPluginOptions {
  /** HS256 secret (at least 16 characters) shared with the REST API that signs the tokens. */
  secret?: string
  /**
   * Instead of `secret`: a function that verifies a token and returns its claims, or throws (a host
   * app with its own JWT setup passes e.g. `(token) => app.jwt.verify(token)`). Its error's `code`
   * (fast-jwt's, as @fastify/jwt throws them) picks the message clients see.
   */
  verify?: (token: string) => unknown
  claims?: ClaimNames
  /** A role that may watch every negocio. Unset: nobody may. */
  adminRole?: string
  /** The role a caller of /notify/cita must have. Default `service`. */
  serviceRole?: string
}

export type Claims = Record<string, unknown>

export type Auth = ReturnType<typeof createAuth>

const jwtMessages: Record<string, string> = {
  FAST_JWT_EXPIRED: 'token expired',
  FAST_JWT_INACTIVE: 'token not active yet',
  FAST_JWT_INVALID_SIGNATURE: 'invalid token signature',
  FAST_JWT_INVALID_ALGORITHM: 'token algorithm not allowed (HS256 only)',
  FAST_JWT_MISSING_SIGNATURE: 'token algorithm not allowed (HS256 only)',
  FAST_JWT_MALFORMED: 'malformed token',
  FAST_JWT_INVALID_TYPE: 'malformed token',
  FAST_JWT_INVALID_PAYLOAD: 'malformed token'
}

function createAuth (verifyToken: (token: string) => unknown, opts: AuthPluginOptions) {
  const names = {
    negocioId: opts.claims?.negocioId ?? 'negocio_id',
    negocios: opts.claims?.negocios ?? 'negocios',
    role: opts.claims?.role ?? 'role'
  }
  const serviceRole = opts.serviceRole ?? 'service'
  const adminRole = opts.adminRole

  /** Verifies signature, algorithm and time claims; throws AppError('unauthorized') with the reason. */
  function verify (token: string | undefined): Claims {
    if (token === undefined || token === '') throw new AppError('unauthorized', 'missing token')
    let payload: unknown
    try {
      payload = verifyToken(token)
    } catch (err) {
      const code = (err as { code?: string }).code ?? ''
      throw new AppError('unauthorized', jwtMessages[code] ?? 'invalid token', { cause: err })
    }
    if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) {
      throw new AppError('unauthorized', 'malformed token')
    }
    return payload as Claims
  }

  /** Which negocios a verified token may watch. Ill-typed claims grant nothing. */
  function accessOf (claims: Claims): Access {
    const negocios = new Set<string>()
    const one = claims[names.negocioId]
    if (isNegocioId(one)) negocios.add(one)
    const many = claims[names.negocios]
    if (Array.isArray(many)) {
      for (const id of many) if (isNegocioId(id)) negocios.add(id)
    }
    const access: Access = { all: adminRole !== undefined && claims[names.role] === adminRole, negocios }
    if (typeof claims.sub === 'string' && claims.sub !== '') access.sub = claims.sub
    if (typeof claims.exp === 'number') access.exp = claims.exp
    return access
  }

  function isService (claims: Claims): boolean {
    return claims[names.role] === serviceRole
  }

  return { verify, accessOf, isService, claimNames: names, serviceRole }
}

/** The token of a request: `Authorization: Bearer <t>`, `?token=<t>`, or `Sec-WebSocket-Protocol: bearer, <t>`. */
export function tokenFromRequest (request: FastifyRequest, { query = true, protocol = true } = {}): string | undefined {
  const header = request.headers.authorization
  if (typeof header === 'string') {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header)
    return m?.[1] ?? ''
  }
  if (query) {
    const q = (request.query as Record<string, unknown> | undefined)?.token
    if (typeof q === 'string') return q
  }
  if (protocol) {
    const offered = request.headers['sec-websocket-protocol']
    if (typeof offered === 'string') {
      const parts = offered.split(',').map(s => s.trim())
      const at = parts.findIndex(p => p.toLowerCase() === 'bearer')
      if (at !== -1 && parts[at + 1] !== undefined) return parts[at + 1]
    }
  }
  return undefined
}

/**
 * Token verification of its own, with fast-jwt (the verifier @fastify/jwt wraps), so it decorates
 * nothing: a host app's JWT plugin, registered before or after, with another secret or none, is
 * never in its way.
 */
async function authPlugin (fastify: FastifyInstance, opts: AuthPluginOptions) {
  let verify: (token: string) => unknown
  if (opts.secret !== undefined && opts.verify !== undefined) {
    throw new Error('citas-live auth plugin: pass `secret` or `verify`, not both')
  } else if (opts.secret !== undefined) {
    if (opts.secret.length < 16) throw new Error('citas-live auth plugin: secret must be at least 16 characters')
    verify = createVerifier({ key: opts.secret, algorithms: ['HS256'] })
  } else if (opts.verify !== undefined) {
    verify = opts.verify
  } else {
    throw new Error('citas-live auth plugin: pass `secret` (the HS256 secret the REST API signs tokens with) or `verify`')
  }
  provide(fastify, 'auth', createAuth(verify, opts))
}

export default fp(authPlugin, { fastify: '5.x', name: 'citas-auth' })
