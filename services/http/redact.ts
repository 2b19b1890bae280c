import type { FastifyRequest } from 'fastify'

// Tokens out of logs, two layers: `token` query parameters cut from URLs, and JWTs scrubbed from every line.

/** A JWT in compact form: base64url header starting `{"` (eyJ), payload and signature. */
const JWT = /eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g
const CENSOR = '[REDACTED]'

export function redactTokens (text: string): string {
  return text.includes('eyJ') ? text.replace(JWT, CENSOR) : text
}

function isTokenName (name: string): boolean {
  let decoded = name
  try {
    decoded = decodeURIComponent(name.replace(/\+/g, ' '))
  } catch {}
  return decoded.trim().toLowerCase() === 'token'
}

/** Every `token` query parameter's value (`?token=`, `?%74oken=`, …) and any JWT cut out. */
export function redactUrl (url: string): string {
  const at = url.indexOf('?')
  if (at === -1) return redactTokens(url)
  const hash = url.indexOf('#', at)
  const query = url.slice(at + 1, hash === -1 ? undefined : hash)
  const redacted = query.split('&').map(pair => {
    const eq = pair.indexOf('=')
    return eq !== -1 && isTokenName(pair.slice(0, eq)) ? `${pair.slice(0, eq)}=${CENSOR}` : pair
  }).join('&')
  return redactTokens(`${url.slice(0, at)}?${redacted}${hash === -1 ? '' : url.slice(hash)}`)
}

export function scrubbingStream (destination: { write: (line: string) => unknown }): { write: (line: string) => void } {
  return { write (line: string) { destination.write(redactTokens(line)) } }
}

/** The `req` log serializer: Fastify's default fields, the URL redacted. */
export function requestForLog (req: Pick<FastifyRequest, 'method' | 'url' | 'hostname' | 'ip' | 'socket'>): Record<string, unknown> {
  return { method: req.method, url: redactUrl(req.url), host: req.hostname, remoteAddress: req.ip, remotePort: req.socket?.remotePort }
}
