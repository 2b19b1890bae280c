/**
 * The Server-Sent Events transport: one `GET sse?channels=...` stream per attempt, read with fetch
 * (EventSource cannot send `Authorization` or its own `Last-Event-ID`) and parsed by sse.ts. A stream's
 * channels are fixed, it carries no client messages, and its refusals have the handshake's codes.
 */
import { EventStreamParser, type StreamEvent } from './sse.js'
import { errorText, heartbeatOf, httpUrlOf, refusalBody, type Connection, type ConnectionParams, type Failure } from './transport.js'
import { CitasLiveError, type FetchFunction, type FetchResponse, type StreamReader } from './types.js'

export class SseConnection implements Connection {
  /** False once closed, or once it reported how it ended. */
  private live = true
  private controller: AbortController | null = null
  private reader: StreamReader | null = null

  constructor (private readonly p: ConnectionParams) {}

  get channels (): ReadonlySet<string> { return this.p.channels }

  open (): void {
    // Nothing to stream (the server refuses an empty channel list): open, and a subscribe opens another.
    if (this.channels.size === 0) this.p.handlers.opened()
    else void this.read()
  }

  send (): boolean { return false }

  check (): void {} // the watchdog notices a dead stream by itself

  close (): void {
    if (!this.live) return
    this.end()
    try { this.controller?.abort() } catch {}
    void this.reader?.cancel().catch(() => {})
  }

  /** Stops here; `failure`: the attempt never opened, and this is why. */
  private end (failure?: Failure | Promise<Failure>): void {
    this.live = false
    this.p.timer.clear()
    if (failure !== undefined) this.p.handlers.failed(Promise.resolve(failure))
  }

  /** Opens the stream and reads it until it ends, is refused, or is dropped. */
  private async read (): Promise<void> {
    const { opts, token, handlers, resume } = this.p
    const headers: Record<string, string> = { accept: 'text/event-stream' }
    if (opts.tokenIn !== 'query') headers.authorization = `Bearer ${token}`
    if (resume.lastEventId !== '') headers['last-event-id'] = resume.lastEventId
    let url: URL
    try {
      url = new URL(opts.sseUrl ?? httpUrlOf(opts.url))
      // Default: `sse` beside the WebSocket endpoint, over http(s): `wss://h/live/ws?x=1` → `https://h/live/sse?x=1`.
      if (opts.sseUrl === undefined) url.pathname = url.pathname.replace(/[^/]*$/, 'sse')
    } catch (err) {
      this.end({ kind: 'stop', error: new CitasLiveError('invalid_url', `cannot open ${opts.sseUrl ?? opts.url}: ${errorText(err)}`, { cause: err }) })
      return
    }
    url.searchParams.set('channels', [...this.channels].join(','))
    if (opts.tokenIn === 'query') url.searchParams.set('token', token)
    this.controller = typeof AbortController === 'function' ? new AbortController() : null
    this.p.timer.set(opts.connectTimeout ?? 10_000, () => {
      this.close()
      handlers.failed(Promise.resolve({ kind: 'backoff' }))
    })
    let res: FetchResponse
    try {
      res = await (this.p.choice.fetch as FetchFunction)(url.toString(), { headers, ...(this.controller === null ? {} : { signal: this.controller.signal }) })
    } catch {
      if (this.live) this.end({ kind: 'backoff' })
      return
    }
    if (!this.live) {
      void res.body?.getReader().cancel().catch(() => {})
      return
    }
    const type = res.headers?.get('content-type') ?? 'text/event-stream'
    if (res.status !== 200 || !/^text\/event-stream\b/i.test(type) || res.body === undefined || res.body === null) {
      this.end(this.refused(res))
      return
    }
    const reader = res.body.getReader()
    this.reader = reader
    this.p.timer.clear()
    handlers.opened()
    this.watch()
    const decoder = new TextDecoder()
    const parser = new EventStreamParser({ onEvent: (event) => this.onEvent(event) })
    try {
      while (this.live) {
        const { done, value } = await reader.read()
        if (!this.live || done) break
        this.watch()
        parser.feed(decoder.decode(value, { stream: true }))
      }
    } catch {}
    if (!this.live) return
    // The stream ended without a `close` event: the server or the connection went away.
    this.end()
    handlers.closed()
  }

  /** The request was answered with something other than a stream: the same refusals as the WebSocket handshake's. */
  private async refused (res: FetchResponse): Promise<Failure> {
    const status = res.status
    const body = await refusalBody(res)
    const message = typeof body.message === 'string' ? body.message : `HTTP ${status}`
    const code = typeof body.code === 'string' ? body.code : undefined
    if (status === 401) return { kind: 'token', error: new CitasLiveError('unauthorized', message, { status }) }
    if (status === 404) return { kind: 'backoff', missing: true }
    if (status === 400 || status === 403) {
      // A refused channel is named in the body's `channel`; without one (a foreign Origin, too many channels) the client stops.
      const channel = typeof body.channel === 'string' ? { channel: body.channel } : {}
      return { kind: 'stop', error: new CitasLiveError(code ?? (status === 403 ? 'forbidden' : 'bad_request'), message, { status, ...channel }) }
    }
    return status === 429 ? { kind: 'backoff', error: new CitasLiveError(code ?? 'limit', message, { status }) } : { kind: 'backoff' }
  }

  private onEvent (event: StreamEvent): void {
    if (!this.live) return
    this.p.resume.lastEventId = event.lastEventId
    let data: unknown
    try { data = JSON.parse(event.data) } catch { data = event.data }
    if (event.type !== 'close') {
      this.p.handlers.message({ type: event.type, data })
      return
    }
    const close = data as { code?: unknown, reason?: unknown } | null
    this.close()
    this.p.handlers.closed(typeof close?.code === 'number' ? close.code : 1006, typeof close?.reason === 'string' ? close.reason : '')
  }

  /** Restarts the silence watchdog: the server sends a comment at least every 30 s. */
  private watch (): void {
    const hb = heartbeatOf(this.p.opts)
    if (hb === null || !this.live) return
    this.p.timer.set(hb.interval + hb.timeout, () => {
      this.close()
      this.p.handlers.closed()
    })
  }
}
