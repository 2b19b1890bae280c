/**
 * The client SDK's public class and connect(): connection states, subscriptions, events, reconnects
 * with backoff, tokens, and both transports (WebSocket, and Server-Sent Events read with fetch).
 */
import { CHANNEL_PREFIX, TOKEN_CLOSE_CODES, closeAction, type CloseAction, type ErrorCode, type ServerMessageType, type Stats } from '../protocol.js'
import { backoffDelay, restartDelay } from './backoff.js'
import { decodeToken, isExpired } from './token.js'
import { EventStreamParser, type StreamEvent } from './sse.js'
import {
  CitasLiveError, type ClientEvents, type ConnectOptions, type ConnectionState, type FetchFunction, type FetchResponse, type PageEvents,
  type ServerMessage, type StreamReader, type Timers, type Transport, type WebSocketConstructor, type WebSocketLike
} from './types.js'

const OPEN = 1
/** Server codes that make a channel pointless to subscribe to again. */
const DROP_CHANNEL_CODES = new Set<string>(['forbidden', 'not_found', 'invalid_channel'] satisfies ErrorCode[])
/** Tokens whose `exp` is this far in the past are treated as refused even when the server's answer cannot be seen. */
const EXPIRY_SKEW_MS = 60_000

/** `estadisticas:<id>` for a bare negocio_id; other strings unchanged. */
export function toChannel (channelOrNegocio: string): string {
  return channelOrNegocio.includes(':') ? channelOrNegocio : CHANNEL_PREFIX + channelOrNegocio
}

const defaultTimers: Timers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
  now: () => Date.now()
}

function defaultPageEvents (): PageEvents | false {
  const g = globalThis as any
  if (typeof g.addEventListener !== 'function' || typeof g.document?.addEventListener !== 'function') return false
  return {
    onOnline (fn) {
      g.addEventListener('online', fn)
      return () => g.removeEventListener('online', fn)
    },
    onVisible (fn) {
      const handler = (): void => { if (g.document.visibilityState === 'visible') fn() }
      g.document.addEventListener('visibilitychange', handler)
      return () => g.document.removeEventListener('visibilitychange', handler)
    }
  }
}

function httpUrlOf (wsUrl: string): string {
  return wsUrl.replace(/^ws(s?):/i, 'http$1:')
}

/** `sse` beside the WebSocket endpoint, over http(s): `wss://h/live/ws?x=1` → `https://h/live/sse?x=1`. */
function sseUrlOf (wsUrl: string): string {
  const url = new URL(httpUrlOf(wsUrl))
  url.pathname = url.pathname.replace(/[^/]*$/, 'sse')
  return url.toString()
}

function sameChannels (a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  if (a.size !== b.size) return false
  for (const c of a) if (!b.has(c)) return false
  return true
}

/** An SSE stream: one fetch whose body is read as it arrives. */
interface Stream {
  readonly controller: AbortController | null
  readonly channels: ReadonlySet<string>
  reader: StreamReader | null
  opened: boolean
}

/** What a refused HTTP request's JSON body says (`{statusCode, code, error, message}`, maybe `channel`). */
interface RefusalBody {
  code?: unknown
  message?: unknown
  channel?: unknown
}

/** Opens a client and starts connecting. See ConnectOptions. */
export function connect (opts: ConnectOptions): CitasLiveClient {
  const client = new CitasLiveClient(opts)
  client.start()
  return client
}

type Listeners = { [K in keyof ClientEvents]: Set<ClientEvents[K]> }

export class CitasLiveClient {
  private readonly opts: ConnectOptions
  private readonly WS: WebSocketConstructor | undefined
  private readonly fetchFn: FetchFunction | undefined
  private readonly timers: Timers
  private readonly random: () => number
  private readonly listeners: Listeners = { state: new Set(), stats: new Set(), error: new Set(), subscribed: new Set(), message: new Set() }
  private readonly channelSet = new Set<string>()
  private readonly statsByNegocio = new Map<string, Stats>()
  private readonly pendingIds = new Map<string, string>()
  private currentState: ConnectionState = 'disconnected'
  private activeTransport: Transport
  private socket: WebSocketLike | null = null
  private stream: Stream | null = null
  /** The last event id an SSE stream gave: sent as `Last-Event-ID` by the next stream. */
  private lastEventId = ''
  /** Channels an open SSE stream has carried since the last (re)connect: `subscribed` is emitted once for each. */
  private readonly announced = new Set<string>()
  private reopenQueued = false
  /** `auto`: WebSocket attempts in a row that failed while plain HTTP to the server worked. */
  private wsFailures = 0
  /** `auto`: the server answered 404 for the SSE endpoint, so there is nothing to fall back to. */
  private sseMissing = false
  private token: string | undefined
  private failedToken: string | undefined
  private attempts = 0
  private started = false
  private stopped = false
  private generation = 0
  private seq = 0
  private lastAuthFailed = false
  private retryTimer: unknown = null
  private connectTimer: unknown = null
  private stableTimer: unknown = null
  private heartbeatTimer: unknown = null
  private pongTimer: unknown = null
  private removePageEvents: Array<() => void> = []

  constructor (opts: ConnectOptions) {
    if (typeof opts.url !== 'string' || opts.url === '') throw new TypeError('citas-live client: url is required')
    if (opts.token === undefined && opts.getToken === undefined) throw new TypeError('citas-live client: give token or getToken')
    const transport = opts.transport ?? 'auto'
    if (transport !== 'auto' && transport !== 'websocket' && transport !== 'sse') throw new TypeError(`citas-live client: unknown transport ${String(transport)}`)
    const WS = opts.WebSocket ?? (globalThis as any).WebSocket as WebSocketConstructor | undefined
    const fetchFn = opts.fetch ?? (typeof (globalThis as any).fetch === 'function' ? ((url, init) => (globalThis as any).fetch(url, init)) as FetchFunction : undefined)
    if (WS === undefined && (transport === 'websocket' || (transport === 'auto' && fetchFn === undefined))) {
      throw new TypeError('citas-live client: no global WebSocket here: pass one, e.g. { WebSocket } from the ws package')
    }
    if (fetchFn === undefined && transport === 'sse') throw new TypeError('citas-live client: the sse transport needs fetch')
    this.opts = opts
    this.WS = WS
    this.fetchFn = fetchFn
    this.activeTransport = transport === 'sse' || WS === undefined ? 'sse' : 'websocket'
    this.timers = opts.timers ?? defaultTimers
    this.random = opts.random ?? Math.random
    this.token = opts.token
    for (const c of opts.channels ?? []) this.channelSet.add(toChannel(c))
    if (opts.onState !== undefined) this.listeners.state.add(opts.onState)
    if (opts.onStats !== undefined) this.listeners.stats.add(opts.onStats)
    if (opts.onError !== undefined) this.listeners.error.add(opts.onError)
  }

  /** The current connection state. */
  get state (): ConnectionState { return this.currentState }

  /** The transport in use (or that the next attempt uses): `websocket` or `sse`. */
  get transport (): Transport { return this.activeTransport }

  /** The latest figures per negocio_id; each snapshot after a (re)subscribe replaces the entry. */
  get stats (): ReadonlyMap<string, Stats> { return this.statsByNegocio }

  /** The channels the client keeps subscribed. */
  get channels (): string[] { return [...this.channelSet] }

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof ClientEvents>(event: K, listener: ClientEvents[K]): () => void {
    (this.listeners[event] as Set<ClientEvents[K]>).add(listener)
    return () => { (this.listeners[event] as Set<ClientEvents[K]>).delete(listener) }
  }

  /** Subscribes now if connected, and after every reconnect. */
  subscribe (channelOrNegocio: string): void {
    const channel = toChannel(channelOrNegocio)
    if (this.channelSet.has(channel)) return
    this.channelSet.add(channel)
    this.sendSubscribe(channel)
    this.queueReopen()
  }

  unsubscribe (channelOrNegocio: string): void {
    const channel = toChannel(channelOrNegocio)
    if (!this.forget(channel)) return
    this.send({ type: 'unsubscribe', data: { channel } })
    this.queueReopen()
  }

  /** Connects again now with a fresh backoff: after `disconnected`, or to skip a pending delay. */
  reconnect (): void {
    this.stopped = false
    this.attempts = 0
    this.lastAuthFailed = false
    this.failedToken = undefined
    this.dropConnection(1000, 'reconnecting')
    this.clearTimers()
    this.attachPageEvents()
    this.setState(this.currentState === 'disconnected' ? 'connecting' : 'reconnecting', {})
    void this.open()
  }

  /** Closes the connection for good (state `disconnected`) and removes every timer and page listener. */
  close (): void {
    if (this.stopped) return
    this.stop()
  }

  /** @internal called by connect() */
  start (): void {
    if (this.started) return
    this.started = true
    this.attachPageEvents()
    this.setState('connecting', {})
    void this.open()
  }

  /** Stops following a channel here (not subscribed again after a reconnect) and drops its figures. */
  private forget (channel: string): boolean {
    if (!this.channelSet.delete(channel)) return false
    this.announced.delete(channel)
    if (channel.startsWith(CHANNEL_PREFIX)) this.statsByNegocio.delete(channel.slice(CHANNEL_PREFIX.length))
    return true
  }

  private emit<K extends keyof ClientEvents>(event: K, ...args: Parameters<ClientEvents[K]>): void {
    for (const listener of [...this.listeners[event]]) {
      try {
        (listener as (...a: Parameters<ClientEvents[K]>) => void)(...args)
      } catch (err) {
        // A listener's bug must not leave the connection half-handled: report it outside this call.
        queueMicrotask(() => { throw err })
      }
    }
  }

  private setState (state: ConnectionState, extra: { delay?: number, error?: CitasLiveError }): void {
    const previous = this.currentState
    this.currentState = state
    this.emit('state', { state, previous, attempt: this.attempts, ...extra, transport: this.activeTransport })
  }

  private attachPageEvents (): void {
    if (this.removePageEvents.length > 0) return
    const page = this.opts.pageEvents ?? defaultPageEvents()
    if (page === false) return
    this.removePageEvents = [
      page.onOnline(() => this.wake()),
      page.onVisible(() => this.wake())
    ]
  }

  /** Back online or visible again: skip a pending delay, or check a connection that may have died meanwhile. */
  private wake (): void {
    if (this.stopped) return
    if (this.retryTimer !== null) {
      this.timers.clearTimeout(this.retryTimer)
      this.retryTimer = null
      this.attempts = 0
      void this.open()
    } else if (this.currentState === 'connected' && this.socket !== null && this.heartbeatOptions() !== null && this.pongTimer === null) {
      this.ping()
    }
  }

  private async nextToken (reuse: boolean): Promise<string> {
    // The first attempt uses the given token; every later one asks getToken() when there is one,
    // but an SSE stream opened again for other channels or a refreshed token keeps the current one.
    if (this.opts.getToken !== undefined && !(reuse && this.token !== undefined) &&
        (this.token === undefined || this.generation > 1 || this.lastAuthFailed)) {
      this.token = await this.opts.getToken()
    }
    if (this.token === undefined || this.token === '') throw new CitasLiveError('token', 'getToken() returned no token')
    return this.token
  }

  /** `reuseToken`: an SSE stream opened again on a healthy connection (new channels, a refreshed token). */
  private async open (reuseToken = false): Promise<void> {
    const generation = ++this.generation
    let token: string
    try {
      token = await this.nextToken(reuseToken)
    } catch (err) {
      if (generation !== this.generation || this.stopped) return
      this.emit('error', err instanceof CitasLiveError ? err : new CitasLiveError('token', `getToken() failed: ${(err as Error)?.message ?? String(err)}`, { cause: err }))
      this.retry('backoff')
      return
    }
    if (generation !== this.generation || this.stopped) return
    if (this.failedToken !== undefined && token === this.failedToken) {
      this.stop(new CitasLiveError('unauthorized', 'the server refused the token and getToken() returned the same one'))
      return
    }
    const claims = decodeToken(token)
    if (claims === null) {
      this.authFailed(new CitasLiveError('unauthorized', 'malformed token (not a JWT)'), token)
      return
    }
    if (this.activeTransport === 'sse') {
      void this.openStream(token, generation)
      return
    }
    let url = this.opts.url
    let protocols: string[] | undefined
    if (this.opts.tokenIn === 'query') url += (url.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(token)
    else protocols = ['bearer', token]

    let socket: WebSocketLike
    try {
      const WS = this.WS as WebSocketConstructor
      socket = protocols === undefined ? new WS(url) : new WS(url, protocols)
    } catch (err) {
      this.stop(new CitasLiveError('invalid_url', `cannot open ${this.opts.url}: ${(err as Error)?.message ?? String(err)}`, { cause: err }))
      return
    }
    this.socket = socket
    let opened = false
    let status: number | undefined
    this.connectTimer = this.timers.setTimeout(() => {
      this.connectTimer = null
      if (this.socket !== socket || opened) return
      this.dropSocket(4000, 'connect timeout')
      void this.failedBeforeOpen(token, undefined)
    }, this.opts.connectTimeout ?? 10_000)

    socket.onopen = () => {
      if (this.socket !== socket) return
      opened = true
      this.wsFailures = 0
      this.opened()
      for (const channel of this.channelSet) this.sendSubscribe(channel)
      this.scheduleHeartbeat()
    }
    socket.onmessage = (event: { data: unknown }) => {
      if (this.socket !== socket) return
      this.scheduleHeartbeat()
      this.onMessage(event.data)
    }
    socket.onerror = (event: { message?: unknown }) => {
      // The ws package names the refused handshake's status in the error; browsers never do.
      const m = typeof event?.message === 'string' ? /Unexpected server response: (\d{3})/.exec(event.message) : null
      if (m?.[1] !== undefined) status = Number(m[1])
    }
    socket.onclose = (event: { code?: number, reason?: string }) => {
      if (this.socket !== socket) return
      this.socket = null
      this.clearConnectionTimers()
      if (this.stopped) return
      if (!opened) {
        void this.failedBeforeOpen(token, status)
        return
      }
      this.closedByServer(event?.code ?? 1006, event?.reason ?? '', token)
    }
  }

  /** A connection (socket or stream) is open: the token is good, and after `stableAfter` the backoff starts over. */
  private opened (): void {
    this.clearTimer('connectTimer')
    this.lastAuthFailed = false
    this.failedToken = undefined
    if (this.stableTimer === null) {
      this.stableTimer = this.timers.setTimeout(() => { this.stableTimer = null; this.attempts = 0 }, this.opts.stableAfter ?? 5_000)
    }
    if (this.currentState !== 'connected') this.setState('connected', {})
  }

  /** The server ended an open connection: a WebSocket close, or an SSE `close` event. */
  private closedByServer (code: number, reason: string, token: string): void {
    const message = reason !== '' ? reason : `connection closed with ${code}`
    switch (this.closeActionOf(code)) {
      case 'token':
        this.authFailed(new CitasLiveError('unauthorized', message, { closeCode: code }), token)
        return
      case 'stop':
        this.stop(new CitasLiveError('closed', message, { closeCode: code }))
        return
      case 'soon':
        this.retry('restart')
        return
      case 'backoff':
        this.retry('backoff')
    }
  }

  /** What a close code asks of the client (protocol.ts), with `authCloseCodes` as the token refusals. */
  private closeActionOf (code: number): CloseAction {
    const tokenCodes: readonly number[] = this.opts.authCloseCodes ?? TOKEN_CLOSE_CODES
    if (tokenCodes.includes(code)) return 'token'
    const action = closeAction(code)
    return action === 'token' ? 'backoff' : action
  }

  /** `auto` on WebSocket, with somewhere to fall back to. */
  private mayFallBack (): boolean {
    return (this.opts.transport ?? 'auto') === 'auto' && this.activeTransport === 'websocket' && !this.sseMissing && this.fetchFn !== undefined
  }

  /**
   * A WebSocket attempt that never opened: find out whether the token was the reason, else back off.
   * `auto`: the same plain GET tells whether HTTP gets through where the upgrade does not; after
   * `fallbackAfter` such failures in a row the client switches to SSE.
   */
  private async failedBeforeOpen (token: string, status: number | undefined): Promise<void> {
    const generation = this.generation
    const fallBack = this.mayFallBack()
    let refusal: CitasLiveError | null = null
    let reachable = false
    if (status === 401) {
      refusal = new CitasLiveError('unauthorized', 'the server refused the token (HTTP 401)', { status })
    } else if (status === undefined || fallBack) {
      const probe = await this.probe(token, fallBack)
      refusal = probe.refusal
      reachable = probe.reachable
      const claims = decodeToken(token)
      if (status === undefined && refusal === null && claims !== null && isExpired(claims, this.timers.now(), EXPIRY_SKEW_MS)) {
        refusal = new CitasLiveError('unauthorized', 'token expired')
      }
    }
    if (generation !== this.generation || this.stopped) return
    if (refusal !== null) {
      this.authFailed(refusal, token)
      return
    }
    if (fallBack) {
      this.wsFailures = reachable ? this.wsFailures + 1 : 0
      if (this.wsFailures >= (this.opts.fallbackAfter ?? 3)) {
        this.wsFailures = 0
        this.activeTransport = 'sse'
        this.attempts = 0
        this.retry('now')
        return
      }
    }
    this.retry('backoff')
  }

  /**
   * GET on the WebSocket URL without the upgrade: the server answers 401 with the reason when the
   * token is bad. `reachable`: the server itself answered (a status under 500; a proxy that cannot
   * reach it answers 502-504). With `probe: false` the request is made only when `always` (the
   * `auto` transport needs to know), and a 401 is not read.
   */
  private async probe (token: string, always: boolean): Promise<{ refusal: CitasLiveError | null, reachable: boolean }> {
    const readRefusal = this.opts.probe !== false
    if (this.fetchFn === undefined || (!readRefusal && !always)) return { refusal: null, reachable: false }
    try {
      const signal = typeof AbortSignal !== 'undefined' && typeof AbortSignal.timeout === 'function' ? AbortSignal.timeout(5_000) : undefined
      const res = await this.fetchFn(httpUrlOf(this.opts.url), { headers: { authorization: `Bearer ${token}` }, ...(signal === undefined ? {} : { signal }) })
      const reachable = res.status < 500
      if (res.status !== 401 || !readRefusal) return { refusal: null, reachable }
      let message = 'the server refused the token'
      try {
        const body: unknown = JSON.parse(await res.text())
        if (typeof (body as { message?: unknown })?.message === 'string') message = (body as { message: string }).message
      } catch {}
      return { refusal: new CitasLiveError('unauthorized', message, { status: 401 }), reachable }
    } catch {
      return { refusal: null, reachable: false } // unreachable, or blocked by CORS: not evidence against the token
    }
  }

  /** The SSE URL for this token and the current channels. */
  private streamUrl (token: string): string {
    const url = new URL(this.opts.sseUrl ?? sseUrlOf(this.opts.url))
    url.searchParams.set('channels', [...this.channelSet].join(','))
    if (this.opts.tokenIn === 'query') url.searchParams.set('token', token)
    return url.toString()
  }

  /** Opens an SSE stream with fetch and reads it until it ends, is refused, or is dropped. */
  private async openStream (token: string, generation: number): Promise<void> {
    if (this.channelSet.size === 0) {
      // Nothing to stream (the server refuses an empty channel list): connected, and a subscribe opens one.
      this.stream = { controller: null, channels: new Set(), reader: null, opened: true }
      this.opened()
      return
    }
    const headers: Record<string, string> = { accept: 'text/event-stream' }
    if (this.opts.tokenIn !== 'query') headers.authorization = `Bearer ${token}`
    if (this.lastEventId !== '') headers['last-event-id'] = this.lastEventId
    let url: string
    try {
      url = this.streamUrl(token)
    } catch (err) {
      this.stop(new CitasLiveError('invalid_url', `cannot open ${this.opts.sseUrl ?? this.opts.url}: ${(err as Error)?.message ?? String(err)}`, { cause: err }))
      return
    }
    const controller = typeof AbortController === 'function' ? new AbortController() : null
    const stream: Stream = { controller, channels: new Set(this.channelSet), reader: null, opened: false }
    this.stream = stream
    this.connectTimer = this.timers.setTimeout(() => {
      this.connectTimer = null
      if (this.stream !== stream || stream.opened) return
      this.dropStream()
      this.retry('backoff')
    }, this.opts.connectTimeout ?? 10_000)

    let res: FetchResponse
    try {
      res = await (this.fetchFn as FetchFunction)(url, { headers, ...(controller === null ? {} : { signal: controller.signal }) })
    } catch {
      if (this.stream !== stream || generation !== this.generation) return
      this.stream = null
      this.clearConnectionTimers()
      this.retry('backoff')
      return
    }
    if (this.stream !== stream || generation !== this.generation) {
      void res.body?.getReader().cancel().catch(() => {})
      return
    }
    const type = res.headers?.get('content-type') ?? 'text/event-stream'
    if (res.status !== 200 || !/^text\/event-stream\b/i.test(type) || res.body === undefined || res.body === null) {
      this.stream = null
      this.clearConnectionTimers()
      await this.streamRefused(res, token)
      return
    }
    const reader = res.body.getReader()
    stream.reader = reader
    stream.opened = true
    this.opened()
    for (const channel of stream.channels) {
      if (this.announced.has(channel)) continue
      this.announced.add(channel)
      this.emit('subscribed', channel)
    }
    this.watchStream()
    const decoder = new TextDecoder()
    const parser = new EventStreamParser({
      onEvent: (event) => {
        if (this.stream !== stream) return
        this.lastEventId = event.lastEventId
        this.onStreamEvent(event, token)
      },
      onComment: () => {}
    })
    try {
      for (;;) {
        const { done, value } = await reader.read()
        if (this.stream !== stream || done) break
        this.watchStream()
        parser.feed(decoder.decode(value, { stream: true }))
        if (this.stream !== stream) break
      }
    } catch {}
    if (this.stream !== stream) return
    // The stream ended without a `close` event: the server or the connection went away.
    this.stream = null
    this.clearConnectionTimers()
    if (!this.stopped) this.retry('backoff')
  }

  /** The SSE request was answered with something other than a stream: the same refusals as the WebSocket handshake's. */
  private async streamRefused (res: FetchResponse, token: string): Promise<void> {
    const generation = this.generation
    const status = res.status
    let body: RefusalBody = {}
    try {
      const parsed: unknown = JSON.parse(await res.text())
      if (typeof parsed === 'object' && parsed !== null) body = parsed as RefusalBody
    } catch {}
    if (generation !== this.generation || this.stopped) return
    const message = typeof body.message === 'string' ? body.message : `HTTP ${status}`
    const code = typeof body.code === 'string' ? body.code : undefined
    if (status === 401) {
      this.authFailed(new CitasLiveError('unauthorized', message, { status }), token)
      return
    }
    if (status === 404 && (this.opts.transport ?? 'auto') === 'auto' && this.WS !== undefined) {
      // No SSE endpoint on this server: back to WebSocket for good.
      this.sseMissing = true
      this.activeTransport = 'websocket'
      this.retry('backoff')
      return
    }
    if (status === 400 || status === 403) {
      // A refused channel (named in the body's `channel`): reported and dropped (as a WebSocket
      // subscribe error is), the others streamed at once.
      const channel = typeof body.channel === 'string' ? body.channel : undefined
      const error = new CitasLiveError(code ?? (status === 403 ? 'forbidden' : 'bad_request'), message, { status, ...(channel === undefined ? {} : { channel }) })
      if (channel !== undefined && this.forget(channel)) {
        this.emit('error', error)
        void this.open(true)
        return
      }
      // A foreign Origin, too many channels: the same request would be refused again.
      this.stop(error)
      return
    }
    if (status === 429) this.emit('error', new CitasLiveError(code ?? 'limit', message, { status }))
    this.retry('backoff')
  }

  private onStreamEvent (event: StreamEvent, token: string): void {
    let data: unknown
    try {
      data = JSON.parse(event.data)
    } catch {
      data = event.data
    }
    switch (event.type) {
      case 'stats':
      case 'error':
        this.handleMessage({ type: event.type, data })
        return
      case 'token_expiring':
        this.emit('message', { type: 'token_expiring', data })
        void this.refreshStream()
        return
      case 'close': {
        const close = data as { code?: unknown, reason?: unknown } | null
        this.dropStream()
        this.closedByServer(typeof close?.code === 'number' ? close.code : 1006, typeof close?.reason === 'string' ? close.reason : '', token)
        return
      }
      default:
        this.emit('message', { type: event.type, data })
    }
  }

  /** token_expiring on SSE: there is no refresh message, so the stream is opened again with a fresh token where it left off. */
  private async refreshStream (): Promise<void> {
    if (this.opts.getToken === undefined) return
    const stream = this.stream
    try {
      this.token = await this.opts.getToken()
    } catch (err) {
      this.emit('error', new CitasLiveError('token', `getToken() failed: ${(err as Error)?.message ?? String(err)}`, { cause: err }))
      return
    }
    if (this.stream !== stream || stream === null || this.stopped) return
    this.dropStream()
    void this.open(true)
  }

  /** On SSE a change of channels opens the stream again (once for several changes in a row), resuming from the last event id. */
  private queueReopen (): void {
    if (this.activeTransport !== 'sse' || this.reopenQueued) return
    this.reopenQueued = true
    queueMicrotask(() => {
      this.reopenQueued = false
      const stream = this.stream
      if (this.stopped || stream === null || sameChannels(stream.channels, this.channelSet)) return
      this.dropStream()
      void this.open(true)
    })
  }

  /** Restarts the SSE silence watchdog: the server sends a comment at least every 30 s. */
  private watchStream (): void {
    const hb = this.heartbeatOptions()
    if (hb === null) return
    this.clearTimer('heartbeatTimer')
    const stream = this.stream
    this.heartbeatTimer = this.timers.setTimeout(() => {
      this.heartbeatTimer = null
      if (this.stream !== stream) return
      this.dropStream()
      this.retry('backoff')
    }, hb.interval + hb.timeout)
  }

  /** The token was refused: try once more with a fresh one from getToken(), else stop and say why. */
  private authFailed (error: CitasLiveError, token: string): void {
    if (this.opts.getToken !== undefined && !this.lastAuthFailed) {
      this.lastAuthFailed = true
      this.failedToken = token
      this.retry('now')
      return
    }
    this.stop(error)
  }

  private retry (kind: 'backoff' | 'restart' | 'now'): void {
    const delay = kind === 'now' ? 0 : kind === 'restart' ? restartDelay(this.opts.backoff, this.random) : backoffDelay(this.attempts, this.opts.backoff, this.random)
    this.attempts++
    this.announced.clear()
    this.clearTimer('retryTimer')
    this.retryTimer = this.timers.setTimeout(() => {
      this.retryTimer = null
      void this.open()
    }, delay)
    this.setState('reconnecting', { delay })
  }

  private stop (error?: CitasLiveError): void {
    this.stopped = true
    this.generation++
    this.clearTimers()
    this.dropConnection(1000, 'client closed', true)
    this.announced.clear()
    for (const remove of this.removePageEvents) remove()
    this.removePageEvents = []
    if (error !== undefined) this.emit('error', error)
    this.setState('disconnected', error === undefined ? {} : { error })
  }

  private dropConnection (code: number, reason: string, graceful = false): void {
    this.dropSocket(code, reason, graceful)
    this.dropStream()
  }

  /** Forgets the current SSE stream at once and aborts its request. */
  private dropStream (): void {
    const stream = this.stream
    if (stream === null) return
    this.stream = null
    this.clearConnectionTimers()
    try {
      stream.controller?.abort()
    } catch {}
    void stream.reader?.cancel().catch(() => {})
  }

  /**
   * Forgets the current socket at once: a dead connection may take long to report its close.
   * `graceful` (close()): a normal close handshake; otherwise ws's terminate() where there is one.
   */
  private dropSocket (code: number, reason: string, graceful = false): void {
    const socket = this.socket
    if (socket === null) return
    this.socket = null
    this.clearConnectionTimers()
    socket.onopen = null
    socket.onmessage = null
    socket.onclose = null
    socket.onerror = () => {}
    try {
      const terminate = (socket as { terminate?: () => void }).terminate
      if (!graceful && typeof terminate === 'function') terminate.call(socket)
      else socket.close(code, reason)
    } catch {}
  }

  private onMessage (raw: unknown): void {
    if (typeof raw !== 'string') raw = String(raw)
    let message: ServerMessage
    try {
      message = JSON.parse(raw as string) as ServerMessage
    } catch {
      return
    }
    if (typeof message !== 'object' || message === null || typeof message.type !== 'string') return
    this.handleMessage(message)
  }

  /** A server message, from either transport. */
  private handleMessage (message: ServerMessage): void {
    const data = message.data as Record<string, unknown> | undefined
    switch (message.type as ServerMessageType) {
      case 'stats': {
        const stats = data as unknown as Stats
        if (typeof stats?.negocio_id !== 'string') return
        this.statsByNegocio.set(stats.negocio_id, stats)
        this.emit('stats', stats)
        return
      }
      case 'subscribed':
        if (typeof data?.channel === 'string') this.emit('subscribed', data.channel)
        return
      case 'pong':
      case 'unsubscribed':
        return
      case 'error': {
        const code = typeof data?.code === 'string' ? data.code : 'internal'
        // The channel is named in data.channel when the server ends a subscription on its own (a
        // refresh that no longer allows it, a deleted business); an answer to a subscribe has its id.
        const channel = typeof data?.channel === 'string'
          ? data.channel
          : message.id === undefined ? undefined : this.pendingIds.get(String(message.id))
        if (channel !== undefined && DROP_CHANNEL_CODES.has(code)) this.forget(channel)
        this.emit('error', new CitasLiveError(code, typeof data?.message === 'string' ? data.message : code, channel === undefined ? {} : { channel }))
        return
      }
      case 'token_expiring':
        void this.refreshToken()
        this.emit('message', message)
        return
      default:
        this.emit('message', message)
    }
  }

  /** The server warned that the token expires soon: hand it a fresh one on the open connection. */
  private async refreshToken (): Promise<void> {
    if (this.opts.getToken === undefined) return
    const socket = this.socket
    try {
      const token = await this.opts.getToken()
      this.token = token
      if (this.socket === socket) this.send({ type: 'refresh', data: { token } })
    } catch (err) {
      this.emit('error', new CitasLiveError('token', `getToken() failed: ${(err as Error)?.message ?? String(err)}`, { cause: err }))
    }
  }

  private sendSubscribe (channel: string): void {
    const id = `s${++this.seq}`
    if (this.send({ type: 'subscribe', id, data: { channel } })) this.pendingIds.set(id, channel)
  }

  private send (message: unknown): boolean {
    const socket = this.socket
    if (socket === null || socket.readyState !== OPEN || this.currentState !== 'connected') return false
    socket.send(JSON.stringify(message))
    return true
  }

  private heartbeatOptions (): { interval: number, timeout: number } | null {
    const hb = this.opts.heartbeat
    if (hb === false) return null
    return { interval: hb?.interval ?? 25_000, timeout: hb?.timeout ?? 10_000 }
  }

  /** Any message proves the connection alive: the next ping goes out after `interval` of silence. */
  private scheduleHeartbeat (): void {
    const hb = this.heartbeatOptions()
    if (hb === null || this.socket === null) return
    this.clearTimer('pongTimer')
    this.clearTimer('heartbeatTimer')
    this.heartbeatTimer = this.timers.setTimeout(() => {
      this.heartbeatTimer = null
      this.ping()
    }, hb.interval)
  }

  private ping (): void {
    const hb = this.heartbeatOptions()
    if (hb === null || !this.send({ type: 'ping' })) return
    this.clearTimer('heartbeatTimer')
    this.pongTimer = this.timers.setTimeout(() => {
      this.pongTimer = null
      if (this.socket === null) return
      this.dropSocket(4000, 'heartbeat timeout')
      this.retry('backoff')
    }, hb.timeout)
  }

  private clearTimer (name: 'retryTimer' | 'connectTimer' | 'stableTimer' | 'heartbeatTimer' | 'pongTimer'): void {
    if (this[name] !== null) this.timers.clearTimeout(this[name])
    this[name] = null
  }

  private clearConnectionTimers (): void {
    this.clearTimer('connectTimer')
    this.clearTimer('stableTimer')
    this.clearTimer('heartbeatTimer')
    this.clearTimer('pongTimer')
    this.pendingIds.clear()
  }

  private clearTimers (): void {
    this.clearTimer('retryTimer')
    this.clearConnectionTimers()
  }
}
