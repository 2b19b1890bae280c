/**
 * The client SDK's public class: connection states, subscriptions, events, reconnects with backoff and
 * tokens. It drives one connection at a time through the Connection interface of transport.ts, made by
 * websocket.ts or sse-transport.ts as TransportChoice says.
 */
import { CHANNEL_PREFIX, TOKEN_CLOSE_CODES, closeAction, type ClientFrame, type ErrorCode, type ServerMessageType } from '../protocol.js'
import { backoffDelay, restartDelay } from './backoff.js'
import { SseConnection } from './sse-transport.js'
import { decodeToken } from './token.js'
import { errorText, Timer, TransportChoice, type Connection, type ConnectionHandlers, type ConnectionParams, type Failure } from './transport.js'
import { CitasLiveError, type ClientEvents, type ConnectOptions, type ConnectionState, type PageEvents, type ServerMessage, type Stats, type Timers, type Transport } from './types.js'
import { WebSocketConnection } from './websocket.js'

/** Server codes that make a channel pointless to subscribe to again. */
const DROP_CHANNEL_CODES = new Set<string>(['forbidden', 'not_found', 'invalid_channel'] satisfies ErrorCode[])

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

function tokenError (err: unknown): CitasLiveError {
  return new CitasLiveError('token', `getToken() failed: ${errorText(err)}`, { cause: err })
}

/** Opens a client and starts connecting. See ConnectOptions. */
export function connect (opts: ConnectOptions): CitasLiveClient {
  const client = new CitasLiveClient(opts)
  client.start()
  return client
}

export class CitasLiveClient {
  private readonly opts: ConnectOptions
  private readonly choice: TransportChoice
  private readonly timers: Timers
  private readonly random: () => number
  private readonly listeners: { [K in keyof ClientEvents]: Set<ClientEvents[K]> } = { state: new Set(), stats: new Set(), error: new Set(), subscribed: new Set(), message: new Set() }
  private readonly channelSet = new Set<string>()
  private readonly statsByNegocio = new Map<string, Stats>()
  private readonly pendingIds = new Map<string, string>()
  private currentState: ConnectionState = 'disconnected'
  private conn: Connection | null = null
  /** The last event id an SSE stream gave: sent as `Last-Event-ID` by the next stream. */
  private readonly resume = { lastEventId: '' }
  /** Channels an open SSE stream has carried since the last (re)connect: `subscribed` is emitted once for each. */
  private readonly announced = new Set<string>()
  private reopenQueued = false
  private token: string | undefined
  private failedToken: string | undefined
  private attempts = 0
  private started = false
  private stopped = false
  private generation = 0
  private seq = 0
  private lastAuthFailed = false
  private readonly retryTimer: Timer
  private readonly stableTimer: Timer
  private removePageEvents: Array<() => void> = []

  constructor (opts: ConnectOptions) {
    if (typeof opts.url !== 'string' || opts.url === '') throw new TypeError('citas-live client: url is required')
    if (opts.token === undefined && opts.getToken === undefined) throw new TypeError('citas-live client: give token or getToken')
    this.choice = new TransportChoice(opts)
    this.opts = opts
    this.timers = opts.timers ?? defaultTimers
    this.retryTimer = new Timer(this.timers)
    this.stableTimer = new Timer(this.timers)
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
  get transport (): Transport { return this.choice.current }

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
    this.dropConnection('reconnecting')
    this.retryTimer.clear()
    this.attachPageEvents()
    this.setState(this.currentState === 'disconnected' ? 'connecting' : 'reconnecting', {})
    void this.open()
  }

  /** Closes the connection for good (state `disconnected`) and removes every timer and page listener. */
  close (): void { if (!this.stopped) this.stop() }

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
    this.emit('state', { state, previous, attempt: this.attempts, ...extra, transport: this.choice.current })
  }

  private attachPageEvents (): void {
    if (this.removePageEvents.length > 0) return
    const page = this.opts.pageEvents ?? defaultPageEvents()
    if (page === false) return
    this.removePageEvents = [page.onOnline(() => this.wake()), page.onVisible(() => this.wake())]
  }

  /** Back online or visible again: skip a pending delay, or check a connection that may have died meanwhile. */
  private wake (): void {
    if (this.stopped) return
    if (this.retryTimer.pending) {
      this.retryTimer.clear()
      this.attempts = 0
      void this.open()
    } else if (this.currentState === 'connected') {
      this.conn?.check()
    }
  }

  private async nextToken (reuse: boolean): Promise<string> {
    // The first attempt uses the given token, later ones getToken()'s; a reopened SSE stream keeps the current one.
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
      this.emit('error', err instanceof CitasLiveError ? err : tokenError(err))
      this.retry('backoff')
      return
    }
    if (generation !== this.generation || this.stopped) return
    if (this.failedToken !== undefined && token === this.failedToken) {
      this.stop(new CitasLiveError('unauthorized', 'the server refused the token and getToken() returned the same one'))
      return
    }
    if (decodeToken(token) === null) {
      this.authFailed(new CitasLiveError('unauthorized', 'malformed token (not a JWT)'), token)
      return
    }
    // A connection calls no handler once dropped (transport.ts), so these are about the current one.
    const handlers: ConnectionHandlers = {
      opened: () => this.opened(conn),
      message: (message) => this.handleMessage(message),
      closed: (code, reason) => {
        this.dropConnection()
        if (code === undefined) this.retry('backoff')
        else this.closedByServer(code, reason ?? '', token)
      },
      failed: (why) => {
        this.dropConnection()
        void why.then((failure) => { if (generation === this.generation && !this.stopped) this.failed(failure, token) })
      }
    }
    const params: ConnectionParams = { opts: this.opts, token, timers: this.timers, timer: new Timer(this.timers), handlers, choice: this.choice, channels: new Set(this.channelSet), resume: this.resume }
    const conn: Connection = this.choice.current === 'sse' ? new SseConnection(params) : new WebSocketConnection(params)
    this.conn = conn
    conn.open()
  }

  /** A connection is open: the token is good, and after `stableAfter` the backoff starts over. */
  private opened (conn: Connection): void {
    this.lastAuthFailed = false
    this.failedToken = undefined
    this.choice.opened()
    if (!this.stableTimer.pending) this.stableTimer.set(this.opts.stableAfter ?? 5_000, () => { this.attempts = 0 })
    if (this.currentState !== 'connected') this.setState('connected', {})
    if (conn.channels === null) {
      for (const channel of this.channelSet) this.sendSubscribe(channel)
      return
    }
    // A stream carries its channels from the start: each is announced as a subscribe reply would be.
    for (const channel of conn.channels) {
      if (this.announced.has(channel)) continue
      this.announced.add(channel)
      this.emit('subscribed', channel)
    }
  }

  /** The server closed an open connection: as protocol.ts says for the code, with `authCloseCodes` as the token refusals. */
  private closedByServer (code: number, reason: string, token: string): void {
    const message = reason !== '' ? reason : `connection closed with ${code}`
    const tokenCodes: readonly number[] = this.opts.authCloseCodes ?? TOKEN_CLOSE_CODES
    const action = closeAction(code)
    if (tokenCodes.includes(code)) this.authFailed(new CitasLiveError('unauthorized', message, { closeCode: code }), token)
    else if (action === 'stop') this.stop(new CitasLiveError('closed', message, { closeCode: code }))
    else this.retry(action === 'soon' ? 'restart' : 'backoff')
  }

  /** An attempt that never opened. */
  private failed (failure: Failure, token: string): void {
    if (failure.kind === 'token') {
      this.authFailed(failure.error, token)
    } else if (failure.kind === 'stop') {
      // A refused channel is reported and dropped (as a WebSocket subscribe error is), the others streamed at once.
      const channel = failure.error.channel
      if (channel === undefined || !this.forget(channel)) {
        this.stop(failure.error)
        return
      }
      this.emit('error', failure.error)
      void this.open(true)
    } else {
      if (failure.error !== undefined) this.emit('error', failure.error)
      const fellBack = this.choice.fallsBack(failure)
      if (fellBack) this.attempts = 0
      this.retry(fellBack ? 'now' : 'backoff')
    }
  }

  /** On SSE a change of channels opens the stream again (once for several changes in a row), resuming from the last event id. */
  private queueReopen (): void {
    if (this.choice.current !== 'sse' || this.reopenQueued) return
    this.reopenQueued = true
    queueMicrotask(() => {
      this.reopenQueued = false
      const channels = this.conn?.channels ?? null
      const same = channels !== null && channels.size === this.channelSet.size && [...channels].every(c => this.channelSet.has(c))
      if (!this.stopped && channels !== null && !same) this.reopen('channels changed')
    })
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
    this.retryTimer.set(delay, () => { void this.open() })
    this.setState('reconnecting', { delay })
  }

  private stop (error?: CitasLiveError): void {
    this.stopped = true
    this.generation++
    this.retryTimer.clear()
    this.dropConnection('client closed', true)
    this.announced.clear()
    for (const remove of this.removePageEvents) remove()
    this.removePageEvents = []
    if (error !== undefined) this.emit('error', error)
    this.setState('disconnected', error === undefined ? {} : { error })
  }

  /** Forgets the current connection at once and closes it, unless it ended by itself (`graceful`: close() asked). */
  private dropConnection (reason = '', graceful = false): void {
    const conn = this.conn
    this.conn = null
    this.stableTimer.clear()
    this.pendingIds.clear()
    conn?.close(reason, graceful)
  }

  /** An SSE stream opened again on a healthy connection (other channels, a fresh token), with the current token. */
  private reopen (reason: string): void {
    this.dropConnection(reason)
    void this.open(true)
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
        // data.channel when the server ends a subscription on its own (a narrower refresh, a deleted business); else the subscribe's id.
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

  /** The token expires soon: a fresh one goes in a `refresh` message, or, as a stream has none, in a reopened stream. */
  private async refreshToken (): Promise<void> {
    if (this.opts.getToken === undefined) return
    const conn = this.conn
    let token: string
    try {
      token = await this.opts.getToken()
      this.token = token
    } catch (err) {
      this.emit('error', tokenError(err))
      return
    }
    if (this.conn !== conn || conn === null || this.stopped) return
    if (conn.channels === null) this.send({ type: 'refresh', data: { token } })
    else this.reopen('token refresh')
  }

  private sendSubscribe (channel: string): void {
    const id = `s${++this.seq}`
    if (this.send({ type: 'subscribe', id, data: { channel } })) this.pendingIds.set(id, channel)
  }

  private send (message: ClientFrame): boolean {
    return this.currentState === 'connected' && this.conn !== null && this.conn.send(message)
  }
}
