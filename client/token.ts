/** What the client can read from a JWT without verifying it (only the server can verify). */
export interface TokenClaims {
  [claim: string]: unknown
  exp?: number
  negocio_id?: unknown
  negocios?: unknown
}

function base64UrlDecode (part: string): string {
  const b64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=')
  const binary = atob(b64)
  const bytes = Uint8Array.from(binary, c => c.charCodeAt(0))
  return new TextDecoder().decode(bytes)
}

/** The payload of a JWT, or null when the string is not a decodable JWT. Does not check the signature. */
export function decodeToken (token: string): TokenClaims | null {
  const parts = token.split('.')
  if (parts.length !== 3 || parts[1] === undefined || parts[1] === '') return null
  try {
    const payload: unknown = JSON.parse(base64UrlDecode(parts[1]))
    return typeof payload === 'object' && payload !== null && !Array.isArray(payload) ? payload as TokenClaims : null
  } catch {
    return null
  }
}

/**
 * The negocios a token names, with the server's default claim names (`negocio_id` and `negocios`);
 * pass other names when the server's JWT_CLAIM_* settings differ.
 */
export function negociosOf (claims: TokenClaims, names: { negocioId?: string, negocios?: string } = {}): string[] {
  const one = claims[names.negocioId ?? 'negocio_id']
  const many = claims[names.negocios ?? 'negocios']
  const ids = [
    ...(typeof one === 'string' ? [one] : []),
    ...(Array.isArray(many) ? many.filter((v): v is string => typeof v === 'string') : [])
  ]
  return [...new Set(ids)]
}

/** True when the token carries an `exp` more than `skewMs` in the past. */
export function isExpired (claims: TokenClaims, now: number, skewMs = 0): boolean {
  return typeof claims.exp === 'number' && claims.exp * 1000 < now - skewMs
}
