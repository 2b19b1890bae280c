/**
 * The internal interface between the client's state machine (client.ts) and one connection attempt
 * over WebSocket (websocket.ts) or Server-Sent Events (sse-transport.ts), which of the two the next
 * attempt uses, and the helpers both share.
 */
import type { ClientFrame } from '../protocol.js'
import type { CitasLiveError, ConnectOptions, FetchFunction, FetchResponse, ServerMessage, Timers, Transport, WebSocketConstructor } from './types.js'

/** Why an attempt failed before it opened, as far as the transport could tell; the client decides what follows. */
export type Failure =
  | { kind: 'token', error: CitasLiveError } // the token was refused
  | { kind: 'stop', error: CitasLiveError } // the same attempt would fail again, unless `error.channel` can be dropped
  // Try again later. `error` is reported first; `reachable`: the server answered plain HTTP; `missing`: no such endpoint.
  | { kind: 'backoff', error?: CitasLiveError, reachable?: boolean, missing?: boolean }

export interface ConnectionHandlers {
  opened: () => void
  message: (message: ServerMessage) => void
  /** An open connection ended: with the server's close code and reason, or neither when it was lost. */
  closed: (code?: number, reason?: string) => void
  /** The attempt ended before it opened; why, once known (finding out may take an HTTP request). */
  failed: (why: Promise<Failure>) => void
}

/** One connection attempt. Once closed, or once it reported `closed` or `failed`, it calls no handler. */
export interface Connection {
  /** The channels a stream was opened for (SSE); null where channels are subscribed with messages. */
  readonly channels: ReadonlySet<string> | null
  open: () => void
  /** Sends a client message; false when it cannot (not open, or a transport that carries none). */
  send: (message: ClientFrame) => boolean
  /** The page came back: check that the connection still lives (a WebSocket ping). */
  check: () => void
  /** Ends it at once (a WebSocket closes with 1000 and `reason`); `graceful`: with a full close handshake. */
  close: (reason: string, graceful?: boolean) => void
}

/** What a connection is opened with; each transport reads the part that concerns it. */
export interface ConnectionParams {
  opts: ConnectOptions
  token: string
  timers: Timers
  /** The connection's own timer: the connect timeout, then the heartbeat's (one at a time). */
  timer: Timer
  handlers: ConnectionHandlers
  choice: TransportChoice
  channels: ReadonlySet<string>
  /** Kept by the client across SSE streams: sent as `Last-Event-ID`, updated as events arrive. */
  resume: { lastEventId: string }
}

/** Which transport the next attempt uses: `auto` starts on WebSocket and falls back to SSE where upgrades fail while HTTP works. */
export class TransportChoice {
  readonly WebSocket: WebSocketConstructor | undefined
  readonly fetch: FetchFunction | undefined
  current: Transport
  private readonly auto: boolean
  /** `auto`: WebSocket attempts in a row that failed while plain HTTP to the server worked. */
  private wsFailures = 0
  /** `auto`: the server answered 404 for the SSE endpoint, so there is nothing to fall back to. */
  private sseMissing = false

  constructor (private readonly opts: ConnectOptions) {
    const transport = opts.transport ?? 'auto'
    this.auto = transport === 'auto'
    if (transport !== 'auto' && transport !== 'websocket' && transport !== 'sse') throw new TypeError(`citas-live client: unknown transport ${String(transport)}`)
    this.WebSocket = opts.WebSocket ?? (globalThis as any).WebSocket as WebSocketConstructor | undefined
    this.fetch = opts.fetch ?? (typeof (globalThis as any).fetch === 'function' ? ((url, init) => (globalThis as any).fetch(url, init)) as FetchFunction : undefined)
    if (this.WebSocket === undefined && (transport === 'websocket' || (transport === 'auto' && this.fetch === undefined))) {
      throw new TypeError('citas-live client: no global WebSocket here: pass one, e.g. { WebSocket } from the ws package')
    }
    if (this.fetch === undefined && transport === 'sse') throw new TypeError('citas-live client: the sse transport needs fetch')
    this.current = transport === 'sse' || this.WebSocket === undefined ? 'sse' : 'websocket'
  }

  /** `auto` on WebSocket, with somewhere to fall back to: a failed upgrade must tell whether plain HTTP gets through. */
  get mayFallBack (): boolean { return this.auto && this.current === 'websocket' && !this.sseMissing && this.fetch !== undefined }

  opened (): void { this.wsFailures = 0 }

  /** An attempt failed and will be retried: true when it makes `auto` switch to SSE (after `fallbackAfter` in a row). */
  fallsBack (failure: { reachable?: boolean, missing?: boolean }): boolean {
    if (failure.missing === true && this.auto && this.WebSocket !== undefined) {
      this.sseMissing = true // no SSE endpoint on this server: back to WebSocket for good
      this.current = 'websocket'
    }
    if (!this.mayFallBack) return false
    this.wsFailures = failure.reachable === true ? this.wsFailures + 1 : 0
    if (this.wsFailures < (this.opts.fallbackAfter ?? 3)) return false
    this.wsFailures = 0
    this.current = 'sse'
    return true
  }
}

/** One pending timeout at most: set() replaces it. */
export class Timer {
  private handle: unknown = null

  constructor (private readonly timers: Timers) {}

  get pending (): boolean { return this.handle !== null }

  set (ms: number, fn: () => void): void {
    this.clear()
    this.handle = this.timers.setTimeout(() => { this.handle = null; fn() }, ms)
  }

  clear (): void {
    if (this.handle !== null) this.timers.clearTimeout(this.handle)
    this.handle = null
  }
}

/** The heartbeat settings, or null when it is off. */
export function heartbeatOf (opts: ConnectOptions): { interval: number, timeout: number } | null {
  const hb = opts.heartbeat
  return hb === false ? null : { interval: hb?.interval ?? 25_000, timeout: hb?.timeout ?? 10_000 }
}

export function httpUrlOf (wsUrl: string): string {
  return wsUrl.replace(/^ws(s?):/i, 'http$1:')
}

export function errorText (err: unknown): string {
  return (err as Error)?.message ?? String(err)
}

/** What a refused HTTP request's JSON body says (`{statusCode, code, error, message}`, maybe `channel`); {} when it is not JSON. */
export async function refusalBody (res: FetchResponse): Promise<{ code?: unknown, message?: unknown, channel?: unknown }> {
  try {
    const parsed: unknown = JSON.parse(await res.text())
    if (typeof parsed === 'object' && parsed !== null) return parsed
  } catch {}
  return {}
}
