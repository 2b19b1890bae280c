import fp from 'fastify-plugin'
import { createVerifier } from 'fast-jwt'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { Type, type Static } from '@sinclair/typebox'
import { provide } from './namespace.js'
import { fromOption, resolveOptions } from './options.js'
import { AppError } from '../services/http/errors.js'
import { isNegocioId } from '../services/live/messages.js'
import { createNetworkMatcher } from '../services/http/limits.js'
import type { Access } from '../services/live/hub.js'

const ClaimName = (def: string, description: string) => Type.String({ pattern: '^[A-Za-z0-9_.:-]{1,64}$', default: def, description })

export const AuthOptions = Type.Object({
  secret: Type.Optional(Type.String({ minLength: 16, description: 'HS256 secret shared with the REST API that signs the tokens.' })),
  claims: Type.Object({
    negocioId: ClaimName('negocio_id', 'Claim holding one negocio_id (string).'),
    negocios: ClaimName('negocios', 'Claim holding several negocio_ids (string array).'),
    role: ClaimName('role', 'Claim holding the role.')
  }, { default: {} }),
  adminRole: Type.Optional(Type.String({ minLength: 1, description: 'A role that may watch every negocio. Unset: nobody may.' })),
  serviceRole: Type.String({ minLength: 1, default: 'service', description: 'The role a caller of /notify/cita must have.' }),
  notifyTrustedNetworks: Type.Array(Type.String({ minLength: 1 }), {
    default: [],
    description: 'Networks (CIDRs or addresses) whose /notify/cita calls need no token, as the Go server took them: for a REST API that cannot change. Off (empty) by default; a call that brings a token is checked as always.'
  })
})
type AuthSchemaOptions = Static<typeof AuthOptions>

export type AuthPluginOptions = Partial<Omit<AuthSchemaOptions, 'claims'>> & {
  claims?: Partial<AuthSchemaOptions['claims']>
  /** Instead of `secret`: returns a token's claims or throws, e.g. `(token) => app.jwt.verify(token)` (fast-jwt error codes pick the message). */
  verify?: (token: string) => unknown
}

export type Claims = Record<string, unknown>

export type Auth = ReturnType<typeof createAuth>

declare module './namespace.js' {
  interface CitasLive { auth: Auth }
}

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

function createAuth (verifyToken: (token: string) => unknown, opts: AuthSchemaOptions) {
  const { claims: names, serviceRole, adminRole } = opts

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
    if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) throw new AppError('unauthorized', 'malformed token')
    return payload as Claims
  }

  const negocioSets = createSetInterner(NEGOCIO_SETS_MAX)

  /** Which negocios a verified token may watch. Ill-typed claims grant nothing. */
  function accessOf (claims: Claims): Access {
    const many = claims[names.negocios]
    const ids = [...new Set([claims[names.negocioId], ...(Array.isArray(many) ? many as unknown[] : [])].filter(isNegocioId))]
    return {
      sub: typeof claims.sub === 'string' && claims.sub !== '' ? claims.sub : undefined,
      all: adminRole !== undefined && claims[names.role] === adminRole,
      negocios: negocioSets(ids),
      exp: typeof claims.exp === 'number' ? claims.exp : undefined
    }
  }

  return {
    verify,
    accessOf,
    isService: (claims: Claims): boolean => claims[names.role] === serviceRole,
    serviceRole,
    isTrustedNotifier: fromOption('auth', 'notifyTrustedNetworks', () => createNetworkMatcher(opts.notifyTrustedNetworks))
  }
}

/** The token of a request: `Authorization: Bearer <t>`, `?token=<t>`, or `Sec-WebSocket-Protocol: bearer, <t>`. */
export function tokenFromRequest (request: FastifyRequest, { query = true, protocol = true } = {}): string | undefined {
  const header = request.headers.authorization
  if (typeof header === 'string') {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header)
    return m?.[1] ?? ''
  }
  const q = query ? (request.query as Record<string, unknown> | undefined)?.token : undefined
  if (typeof q === 'string') return q
  const offered = protocol ? (request.headers['sec-websocket-protocol'] ?? '').split(',').map(s => s.trim()) : []
  const at = offered.findIndex(p => p.toLowerCase() === 'bearer')
  return at === -1 ? undefined : offered[at + 1]
}

export const NEGOCIO_SETS_MAX = 10_000

/** Equal negocio sets shared (a negocio's staff hold the same grant; every connection keeps one): at most `max`, oldest dropped. */
export function createSetInterner (max: number): (ids: readonly string[]) => ReadonlySet<string> {
  const sets = new Map<string, ReadonlySet<string>>()
  return (ids) => {
    // Negocio ids have no commas (protocol.ts); one id, the usual token, needs no sort.
    const key = ids.length < 2 ? (ids[0] ?? '') : [...ids].sort().join(',')
    let set = sets.get(key)
    if (set === undefined) {
      if (sets.size >= max) sets.delete(sets.keys().next().value as string)
      set = new Set(ids)
      sets.set(key, set)
    }
    return set
  }
}

/** Verified tokens remembered (the service token of every notify, a dashboard reconnecting after a blip); small: a deploy's storm meets new processes anyway. */
export const VERIFY_CACHE_SIZE = 1000
/** Longer tokens are not remembered, so junk cannot make the cache large. */
const CACHE_TOKEN_MAX = 1024
const CACHE_TTL_MS = 10 * 60_000

/** The clock window (ms) in which a remembered answer holds: nbf to the earlier of exp and the TTL. */
interface Verified { claims: unknown, from: number, until: number }

/**
 * Caches accepted tokens by the whole string (fast-jwt's cache hashes each: a miss costs half a hit's gain); two generations of size/2.
 * A hit still checks nbf..exp, so a cached token expires like any other.
 */
export function cachedVerifier (verify: (token: string) => unknown, size = VERIFY_CACHE_SIZE, now: () => number = Date.now): (token: string) => unknown {
  const half = Math.max(1, Math.floor(size / 2))
  let young = new Map<string, Verified>()
  let old = new Map<string, Verified>()
  const remember = (token: string, entry: Verified): void => {
    if (young.size >= half) {
      old = young
      young = new Map()
    }
    young.set(token, entry)
  }
  return (token) => {
    const t = now()
    let hit = young.get(token)
    if (hit === undefined) {
      hit = old.get(token)
      if (hit !== undefined) remember(token, hit)
    }
    if (hit !== undefined && t >= hit.from && t <= hit.until) return hit.claims
    const claims = verify(token)
    if (token.length > CACHE_TOKEN_MAX || typeof claims !== 'object' || claims === null) return claims
    const { nbf, exp } = claims as { nbf?: unknown, exp?: unknown }
    const until = typeof exp === 'number' ? Math.min(exp * 1000, t + CACHE_TTL_MS) : t + CACHE_TTL_MS
    remember(token, { claims, from: typeof nbf === 'number' ? nbf * 1000 : 0, until })
    return claims
  }
}

/** Token verification of its own (fast-jwt, what @fastify/jwt wraps): it decorates nothing, so a host's JWT plugin is never in its way. */
async function authPlugin (fastify: FastifyInstance, options: AuthPluginOptions) {
  const opts = resolveOptions('auth', AuthOptions, options, ['verify'])
  if (opts.secret !== undefined && options.verify !== undefined) throw new Error('citas-live auth plugin: pass `secret` or `verify`, not both')
  const verify = opts.secret !== undefined ? cachedVerifier(createVerifier({ key: opts.secret, algorithms: ['HS256'] })) : options.verify
  if (verify === undefined) throw new Error('citas-live auth plugin: pass `secret` (the HS256 secret the REST API signs tokens with) or `verify`')
  provide(fastify, 'auth', createAuth(verify, opts))
}

export default fp(authPlugin, { fastify: '5.x', name: 'citas-auth' })
