/**
 * Keeping tokens out of logs. Two layers: URLs are logged with the `token` query parameter cut out
 * (however its name is spelled or percent-encoded), and every finished log line is scrubbed of
 * anything shaped like a JWT, wherever it came from (a 404 message, an error, a host's own line).
 */

/** A JWT in compact form: base64url header starting `{"` (eyJ), payload and signature. */
const JWT = /eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g
const CENSOR = '[REDACTED]'

/** Replaces every JWT-shaped part of `text`. */
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

/** A URL safe to log: the value of every `token` query parameter (`?token=`, `?%74oken=`, …) and any JWT cut out. */
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

/** A pino destination that scrubs each line before handing it to `destination`. */
export function scrubbingStream (destination: { write: (line: string) => unknown }): { write: (line: string) => void } {
  return { write (line: string) { destination.write(redactTokens(line)) } }
}

interface RequestLike {
  method: string
  url: string
  hostname?: string
  ip?: string
  socket?: { remotePort?: number } | null
}

/** The `req` log serializer: Fastify's default fields, with the URL made safe to log. */
export function requestForLog (req: RequestLike): Record<string, unknown> {
  return { method: req.method, url: redactUrl(req.url), host: req.hostname, remoteAddress: req.ip, remotePort: req.socket?.remotePort }
}
