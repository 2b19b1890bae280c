/**
 * The WebSocket transport: one attempt over a WebSocketLike, the token as a subprotocol (or in the
 * query), the heartbeat (ping, pong in time), close codes, and after a failed handshake an HTTP probe
 * that reads whether the token was why: browsers hide the status of a refused handshake.
 */
import type { ClientFrame } from '../protocol.js'
import { decodeToken, isExpired } from './token.js'
import { errorText, heartbeatOf, httpUrlOf, refusalBody, type Connection, type ConnectionParams, type Failure } from './transport.js'
import { CitasLiveError, type ServerMessage, type WebSocketConstructor, type WebSocketLike } from './types.js'

const OPEN = 1
/** Tokens whose `exp` is this far in the past are treated as refused even when the server's answer cannot be seen. */
const EXPIRY_SKEW_MS = 60_000

export class WebSocketConnection implements Connection {
  readonly channels = null
  private socket: WebSocketLike | null = null
  /** The timer is waiting for a pong, not for the next ping. */
  private awaitingPong = false

  constructor (private readonly p: ConnectionParams) {}

  open (): void {
    const { opts, token, handlers } = this.p
    let url = opts.url
    let protocols: string[] | undefined
    if (opts.tokenIn === 'query') url += (url.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(token)
    else protocols = ['bearer', token]
    let socket: WebSocketLike
    try {
      const WS = this.p.choice.WebSocket as WebSocketConstructor
      socket = protocols === undefined ? new WS(url) : new WS(url, protocols)
    } catch (err) {
      handlers.failed(Promise.resolve({ kind: 'stop', error: new CitasLiveError('invalid_url', `cannot open ${opts.url}: ${errorText(err)}`, { cause: err }) }))
      return
    }
    this.socket = socket
    let opened = false
    let status: number | undefined
    this.p.timer.set(opts.connectTimeout ?? 10_000, () => {
      this.drop(4000, 'connect timeout')
      handlers.failed(this.whyRefused(undefined))
    })
    socket.onopen = () => {
      opened = true
      this.p.timer.clear()
      handlers.opened()
      this.beat()
    }
    socket.onmessage = (event: { data: unknown }) => {
      this.beat()
      let message: ServerMessage
      try { message = JSON.parse(String(event.data)) as ServerMessage } catch { return }
      if (typeof message === 'object' && message !== null && typeof message.type === 'string') handlers.message(message)
    }
    socket.onerror = (event: { message?: unknown }) => {
      // The ws package names the refused handshake's status in the error; browsers never do.
      const m = typeof event?.message === 'string' ? /Unexpected server response: (\d{3})/.exec(event.message) : null
      if (m?.[1] !== undefined) status = Number(m[1])
    }
    socket.onclose = (event: { code?: number, reason?: string }) => {
      this.drop()
      if (opened) handlers.closed(event?.code ?? 1006, event?.reason ?? '')
      else handlers.failed(this.whyRefused(status))
    }
  }

  send (message: ClientFrame): boolean {
    if (this.socket === null || this.socket.readyState !== OPEN) return false
    this.socket.send(JSON.stringify(message))
    return true
  }

  check (): void { if (this.socket !== null && !this.awaitingPong) this.ping() }

  /** `graceful` (close()): a normal close handshake; otherwise ws's terminate() where there is one. */
  close (reason: string, graceful = false): void { this.drop(1000, reason, graceful) }

  /** Forgets the socket at once (a dead connection may take long to report its close), and closes it with `code`. */
  private drop (code?: number, reason = '', graceful = false): void {
    const socket = this.socket
    this.socket = null
    this.p.timer.clear()
    if (socket === null) return
    socket.onopen = null
    socket.onmessage = null
    socket.onclose = null
    socket.onerror = () => {}
    if (code === undefined) return
    try {
      const terminate = (socket as { terminate?: () => void }).terminate
      if (!graceful && typeof terminate === 'function') terminate.call(socket)
      else socket.close(code, reason)
    } catch {}
  }

  /** Any message proves the connection alive: the next ping goes out after `interval` of silence. */
  private beat (): void {
    const hb = heartbeatOf(this.p.opts)
    if (hb === null || this.socket === null) return
    this.awaitingPong = false
    this.p.timer.set(hb.interval, () => this.ping())
  }

  private ping (): void {
    const hb = heartbeatOf(this.p.opts)
    if (hb === null || !this.send({ type: 'ping' })) return
    this.awaitingPong = true
    this.p.timer.set(hb.timeout, () => {
      this.drop(4000, 'heartbeat timeout')
      this.p.handlers.closed()
    })
  }

  /**
   * Why the handshake failed: a 401 the ws package saw; else a plain GET of the URL, whose 401 says why and whose status
   * under 500 (not a proxy's 502-504) shows the server `reachable` (with `probe: false`, made only when `auto` needs that).
   */
  private async whyRefused (status: number | undefined): Promise<Failure> {
    const { opts, token, choice: { fetch, mayFallBack: needReachability } } = this.p
    if (status === 401) return { kind: 'token', error: new CitasLiveError('unauthorized', 'the server refused the token (HTTP 401)', { status }) }
    const readRefusal = opts.probe !== false
    let reachable = false
    if (fetch !== undefined && (status === undefined ? readRefusal || needReachability : needReachability)) {
      try {
        const signal = typeof AbortSignal !== 'undefined' && typeof AbortSignal.timeout === 'function' ? AbortSignal.timeout(5_000) : undefined
        const res = await fetch(httpUrlOf(opts.url), { headers: { authorization: `Bearer ${token}` }, ...(signal === undefined ? {} : { signal }) })
        reachable = res.status < 500
        if (res.status === 401 && readRefusal) {
          const { message } = await refusalBody(res)
          return { kind: 'token', error: new CitasLiveError('unauthorized', typeof message === 'string' ? message : 'the server refused the token', { status: 401 }) }
        }
      } catch {} // unreachable, or blocked by CORS: not evidence against the token
    }
    const claims = decodeToken(token)
    if (status === undefined && claims !== null && isExpired(claims, this.p.timers.now(), EXPIRY_SKEW_MS)) {
      return { kind: 'token', error: new CitasLiveError('unauthorized', 'token expired') }
    }
    return { kind: 'backoff', reachable }
  }
}
