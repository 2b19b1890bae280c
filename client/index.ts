export {
  connect, toChannel, CitasLiveClient, CitasLiveError,
  type ConnectOptions, type ConnectionState, type StateChange, type Stats, type ServerMessage, type ClientEvents,
  type WebSocketLike, type WebSocketConstructor, type Timers, type PageEvents,
  type Transport, type FetchFunction, type FetchResponse, type StreamReader
} from './client.js'
export { EventStreamParser, type StreamEvent, type EventStreamHandlers } from './sse.js'
export { backoffCeiling, backoffDelay, restartDelay, BACKOFF_DEFAULTS, type BackoffOptions } from './backoff.js'
export { decodeToken, negociosOf, isExpired, type TokenClaims } from './token.js'
export {
  CHANNEL_PREFIX, CLOSE, CLOSE_ACTIONS, TOKEN_CLOSE_CODES, closeAction,
  type CloseAction, type CloseCode, type ClientFrame, type ErrorCode, type ErrorData, type MessageId, type ServerFrame
} from '../protocol.js'
