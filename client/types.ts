/**
 * The client SDK's public types (index.ts exports them all): connect()'s options, states, events, the
 * error class, and the parts of WebSocket, fetch and timers the client uses. The protocol is in
 * ../protocol.ts, which imports nothing and the server shares: the bundle gains no server code.
 */
import type { Stats } from '../protocol.js'
import type { BackoffOptions } from './backoff.js'

export type { Stats }

/**
 * - `connecting`: the first attempt is under way.
 * - `connected`: the socket is open (subscriptions are being sent or confirmed).
 * - `reconnecting`: the connection was lost or an attempt failed; waiting for, or making, the next attempt.
 * - `disconnected`: stopped for good, by `close()` or because the token was refused (see `StateChange.error`).
 */
export type ConnectionState = 'connecting' | 'connected' | 'reconnecting' | 'disconnected'

/** How the client reaches the server: a WebSocket, or a Server-Sent Events stream read with fetch. */
export type Transport = 'websocket' | 'sse'

export interface StateChange {
  state: ConnectionState
  previous: ConnectionState
  /** Failed attempts since the last stable connection. */
  attempt: number
  /** `reconnecting`: ms until the next attempt. */
  delay?: number
  /** `disconnected` after a refused token: why. */
  error?: CitasLiveError
  /** The transport in use, or the one the next attempt uses. */
  transport: Transport
}

/**
 * Server error codes (`bad_request`, `invalid_channel`, `forbidden`, `not_found`, `unavailable`,
 * `limit`, `rate_limited`, `internal`) and the client's own: `unauthorized` (the token was refused;
 * the client stops), `token` (getToken() failed; the client retries), `closed` (the server closed
 * the connection for something reconnecting would repeat, `closeCode` says which; the client stops),
 * `invalid_url`.
 */
export class CitasLiveError extends Error {
  readonly code: string
  /** The channel a subscribe error is about. */
  readonly channel?: string
  /** HTTP status of a refused handshake, when it could be seen. */
  readonly status?: number
  /** Close code that ended the connection, when one did. */
  readonly closeCode?: number

  constructor (code: string, message: string, extra: { channel?: string, status?: number, closeCode?: number, cause?: unknown } = {}) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause })
    this.name = 'CitasLiveError'
    this.code = code
    if (extra.channel !== undefined) this.channel = extra.channel
    if (extra.status !== undefined) this.status = extra.status
    if (extra.closeCode !== undefined) this.closeCode = extra.closeCode
  }
}

/** Any server message, for the `message` event (types this client does not handle itself). */
export interface ServerMessage {
  type: string
  id?: string | number
  data?: unknown
}

/** The part of the WHATWG WebSocket the client uses; browsers, Node ≥ 22 and the `ws` package all fit. */
export interface WebSocketLike {
  readonly readyState: number
  onopen: ((event: any) => void) | null
  onmessage: ((event: any) => void) | null
  onerror: ((event: any) => void) | null
  onclose: ((event: any) => void) | null
  send: (data: string) => void
  close: (code?: number, reason?: string) => void
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike

/** Timer functions, injectable for tests. */
export interface Timers {
  setTimeout: (fn: () => void, ms: number) => unknown
  clearTimeout: (handle: unknown) => void
  now: () => number
}

/** The part of a fetch Response the client reads. */
export interface FetchResponse {
  status: number
  text: () => Promise<string>
  headers?: { get: (name: string) => string | null }
  body?: { getReader: () => StreamReader } | null
}

export interface StreamReader {
  read: () => Promise<{ done: boolean, value?: Uint8Array }>
  cancel: (reason?: unknown) => Promise<void>
}

/** The part of `fetch` the client uses (the token probe, and the SSE transport). */
export type FetchFunction = (url: string, init: { headers: Record<string, string>, signal?: AbortSignal }) => Promise<FetchResponse>

/** Page events that make a waiting client try again at once. Each returns a function that removes the listener. */
export interface PageEvents {
  onOnline: (fn: () => void) => () => void
  onVisible: (fn: () => void) => () => void
}

export interface ConnectOptions {
  /** The server's WebSocket URL, e.g. `wss://live.example.com/ws`. */
  url: string
  /**
   * `auto` (default): WebSocket, and Server-Sent Events when WebSocket upgrades keep failing while
   * plain HTTP to the server works (see `fallbackAfter`), or when there is no WebSocket at all.
   * `websocket` or `sse`: that one only.
   */
  transport?: 'auto' | Transport
  /** The SSE endpoint. Default: `sse` beside the WebSocket URL (`wss://h/live/ws` → `https://h/live/sse`). */
  sseUrl?: string
  /**
   * `auto`: switch to SSE after this many WebSocket attempts in a row that failed before opening
   * while a plain HTTP request to the server was answered. Default 3.
   */
  fallbackAfter?: number
  /** A token to use. With `getToken` too, it is used for the first attempt only. */
  token?: string
  /** Called before every attempt (but the first when `token` is given) and on `token_expiring`: return a fresh token. */
  getToken?: () => string | Promise<string>
  /** Channels to subscribe to: `estadisticas:<negocio_id>`, or just the negocio_id. Sent again after every reconnect. */
  channels?: string[]
  /**
   * How the token reaches the server. `protocol` (default): `Sec-WebSocket-Protocol: bearer, <token>`
   * (over SSE `Authorization: Bearer <token>`), which keeps it out of URLs and access logs;
   * `query`: `?token=<token>`, as the Go server's clients did.
   */
  tokenIn?: 'protocol' | 'query'
  /** A WebSocket implementation, e.g. `import WebSocket from 'ws'` on Node 20. Default: the global one. */
  WebSocket?: WebSocketConstructor
  backoff?: BackoffOptions
  /** A connection open this long (ms) resets the backoff. Default 5 000. */
  stableAfter?: number
  /** An attempt that has neither opened nor failed after this long (ms) is given up. Default 10 000. */
  connectTimeout?: number
  /**
   * Client heartbeat: after `interval` ms without any message the client sends `{"type":"ping"}` and
   * drops the connection when nothing arrives within `timeout` ms. Default 25 000 / 10 000; `false` turns it off.
   * Over SSE, where the server sends a comment at least every 30 s, a stream silent for
   * `interval + timeout` ms is dropped and opened again.
   */
  heartbeat?: { interval?: number, timeout?: number } | false
  /**
   * When an attempt fails before the socket opens, ask the server over HTTP (GET on the same URL with
   * `Authorization: Bearer`) whether the token is the reason: browsers hide the handshake's status.
   * Needs `fetch`; across origins the server allows it for the origins it accepts. Default true.
   */
  probe?: boolean
  /**
   * Close codes that mean "this token is no longer good": get a new one and reconnect. Default: the
   * server's, [4001]. Set it when a proxy in front of the server closes with codes of its own.
   */
  authCloseCodes?: number[]
  /** Page events to listen to. Default: `online` and `visibilitychange` when there is a window; `false`: none. */
  pageEvents?: PageEvents | false
  onState?: (change: StateChange) => void
  onStats?: (stats: Stats) => void
  onError?: (error: CitasLiveError) => void
  /** For tests. */
  timers?: Timers
  random?: () => number
  /** A fetch implementation. Default: the global one. */
  fetch?: FetchFunction
}

export interface ClientEvents {
  state: (change: StateChange) => void
  stats: (stats: Stats) => void
  error: (error: CitasLiveError) => void
  subscribed: (channel: string) => void
  message: (message: ServerMessage) => void
}
