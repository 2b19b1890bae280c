import type { FastifyServerOptions } from 'fastify'

/** Replaces the value of every `token` query parameter, so a URL can be logged. */
export function redactUrl (url: string): string {
  return url.replace(/([?&]token=)[^&#]*/gi, '$1[REDACTED]')
}

interface LoggedRequest {
  method: string
  url: string
  ip?: string
  socket?: { remotePort?: number }
}

/**
 * pino options for the server: the `token` query parameter is cut from logged URLs, and
 * credentials are censored wherever a header object gets logged.
 */
export function loggerOptions (level: string): Exclude<FastifyServerOptions['logger'], boolean | undefined> {
  return {
    level,
    redact: {
      paths: [
        'req.headers.authorization',
        'req.headers["sec-websocket-protocol"]',
        'headers.authorization',
        'headers["sec-websocket-protocol"]',
        'token'
      ],
      censor: '[REDACTED]'
    },
    serializers: {
      req (req: LoggedRequest) {
        return { method: req.method, url: redactUrl(req.url), remoteAddress: req.ip, remotePort: req.socket?.remotePort }
      }
    }
  }
}
