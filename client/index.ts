// The client SDK's public entry (`citas-live/client`): what a browser or Node application imports.
export { connect, toChannel, CitasLiveClient } from './client.js'
export * from './types.js'
export { EventStreamParser, type StreamEvent, type EventStreamHandlers } from './sse.js'
export { backoffCeiling, backoffDelay, restartDelay, BACKOFF_DEFAULTS, type BackoffOptions } from './backoff.js'
export { decodeToken, negociosOf, isExpired, type TokenClaims } from './token.js'
export {
  CHANNEL_PREFIX, CLOSE, CLOSE_ACTIONS, TOKEN_CLOSE_CODES, closeAction,
  type CloseAction, type CloseCode, type ClientFrame, type ErrorCode, type ErrorData, type MessageId, type ServerFrame
} from '../protocol.js'
