/**
 * The citas-live WebSocket protocol, defined once: message types, the channel names, error codes,
 * close codes with their reasons and what a client does after each, and the shape of the figures.
 * The server, the client SDK (`citas-live/client`), the AsyncAPI document's test and docs/protocol.md
 * follow this module. It imports nothing and holds no server code, so the browser bundle of the
 * client can import it whole (test/client/bundle.test.ts checks). Wire names stay Spanish (`citas_hoy`).
 */

export const CHANNEL_PREFIX = 'estadisticas:'

export const NEGOCIO_ID_PATTERN = '^[A-Za-z0-9_-]{1,64}$'

/** The optional correlation id a client may put on any message; echoed in the direct reply. */
export type MessageId = string | number

export const MAX_ID_LENGTH = 64

export const CLIENT_MESSAGE_TYPES = ['subscribe', 'unsubscribe', 'ping', 'refresh'] as const
export type ClientMessageType = typeof CLIENT_MESSAGE_TYPES[number]

export const SERVER_MESSAGE_TYPES = ['subscribed', 'unsubscribed', 'pong', 'stats', 'error', 'token_expiring', 'refreshed'] as const
export type ServerMessageType = typeof SERVER_MESSAGE_TYPES[number]

/** GET /sse events: `stats`, `error`, `token_expiring` carry the WebSocket message's `data`; `close` (CloseData) ends the stream. */
export const SSE_EVENT_TYPES = ['stats', 'error', 'token_expiring', 'close'] as const
export type SseEventType = typeof SSE_EVENT_TYPES[number]

export interface CloseData {
  code: number
  reason: string
}

/** The `data` of a `stats` message: the four figures of one business. */
export interface Stats {
  negocio_id: string
  citas_hoy: number
  total_citas: number
  citas_completadas: number
  citas_canceladas: number
  /** Unix seconds when the figures were computed. */
  timestamp: number
}

/** Stable error codes of `error` messages (the HTTP routes answer with the same codes). */
export const ERROR_CODES = [
  'bad_request',
  'invalid_channel',
  'forbidden',
  'not_found',
  'unauthorized',
  'unavailable',
  'limit',
  'rate_limited',
  'internal'
] as const
export type ErrorCode = typeof ERROR_CODES[number]

export type ClientFrame =
  | { type: 'subscribe', id?: MessageId, data: { channel: string } }
  | { type: 'unsubscribe', id?: MessageId, data: { channel: string } }
  | { type: 'ping', id?: MessageId }
  | { type: 'refresh', id?: MessageId, data: { token: string } }

/** `channel`: a subscription the server ended (`forbidden`: refreshed token, `not_found`: negocio deleted); replies carry `id` instead. */
export interface ErrorData {
  code: ErrorCode
  message: string
  channel?: string
}

export type ServerFrame =
  | { type: 'subscribed', id?: MessageId, data: { channel: string } }
  | { type: 'unsubscribed', id?: MessageId, data: { channel: string } }
  | { type: 'pong', id?: MessageId }
  | { type: 'stats', data: Stats }
  | { type: 'error', id?: MessageId, data: ErrorData }
  | { type: 'token_expiring', data: { expires_at: number } }
  /** expires_at: the new token's expiry in unix seconds, null for a token without `exp`. */
  | { type: 'refreshed', id?: MessageId, data: { expires_at: number | null } }

/** Every close the server makes; ws itself sends the first two, and 1009 past its frame limit (16.5 KiB), without a reason. */
export const CLOSE = {
  /** A frame that breaks RFC 6455 (unmasked, bad opcode, ...). */
  protocolError: { code: 1002, reason: '' },
  invalidUtf8: { code: 1007, reason: '' },
  /** Messages over the connection's rate, on and on. */
  rateExceeded: { code: 1008, reason: 'message rate exceeded' },
  /** Over the per-user or per-IP connection limit (concurrent handshakes that raced past the check). */
  tooManyConnections: { code: 1008, reason: 'too many connections' },
  tooBig: { code: 1009, reason: 'message too big' },
  restart: { code: 1012, reason: 'server restarting' },
  /** The client did not read its updates for the stall timeout (a slow consumer). */
  tooSlow: { code: 1013, reason: 'too slow to read updates' },
  /** The token's `exp` passed without a `refresh`. */
  tokenExpired: { code: 4001, reason: 'token expired' }
} as const

export type CloseCode = (typeof CLOSE)[keyof typeof CLOSE]['code']

/** After a close: `backoff` (growing jittered delay), `soon` (short delay: a restart), `token` (new token first), `stop` (a client bug). */
export type CloseAction = 'backoff' | 'soon' | 'token' | 'stop'

export const CLOSE_ACTIONS: { readonly [C in CloseCode]: CloseAction } = {
  1002: 'stop',
  1007: 'stop',
  1008: 'backoff',
  1009: 'stop',
  1012: 'soon',
  1013: 'backoff',
  4001: 'token'
}

/** The action for any close code: codes the server does not send (1006: the connection was lost) mean `backoff`. */
export function closeAction (code: number): CloseAction {
  return Object.hasOwn(CLOSE_ACTIONS, code) ? CLOSE_ACTIONS[code as CloseCode] : 'backoff'
}

export const TOKEN_CLOSE_CODES: readonly CloseCode[] = (Object.keys(CLOSE_ACTIONS).map(Number) as CloseCode[])
  .filter(code => CLOSE_ACTIONS[code] === 'token')
