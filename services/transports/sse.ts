import { createHash, randomInt } from 'node:crypto'
import type { Socket } from 'node:net'
import { CHANNEL_PREFIX, CLOSE, type ServerFrame, type Stats } from '../../protocol.js'
import { Connection, type Access, type Prepared } from '../live/hub.js'

// WebSocket messages as events straight on the socket (`Connection: close`, unchunked): a broadcast shares one Buffer per
// single-channel stream. A `stats` id hashes each channel's figures: any instance tells what a reconnecting client has.

const CONNECTING = 0
const OPEN = 1
const CLOSED = 2

/** 11 base64url characters: 66 bits of a SHA-256. */
const VERSION_LENGTH = 11
const VERSION_RE = /^[A-Za-z0-9_-]{11}$/

function statsVersion (stats: Stats): string {
  return createHash('sha256')
    .update(`${stats.negocio_id}\n${stats.citas_hoy}\n${stats.total_citas}\n${stats.citas_completadas}\n${stats.citas_canceladas}`)
    .digest('base64url')
    .slice(0, VERSION_LENGTH)
}

/** The channel versions a `Last-Event-ID` names (at most `max`); an id this server could not have sent names none. */
export function resumeVersions (lastEventId: string | string[] | undefined, max: number): Set<string> | null {
  if (typeof lastEventId !== 'string' || lastEventId === '') return null
  const parts = lastEventId.split('.', max + 1)
  if (parts.length > max || !parts.every(p => VERSION_RE.test(p))) return null
  return new Set(parts)
}

const EVENT = Symbol('sse event')

/** One message as an event, shared by every stream writing it: `tail` is its `data:` line and the blank line that ends it, `whole` the event as a single-channel stream writes it. */
function convert (payload: string) {
  const frame = JSON.parse(payload) as ServerFrame
  const data = 'data' in frame ? JSON.stringify(frame.data) : '{}'
  const tail = `data: ${data}\n\n`
  if (frame.type !== 'stats') return { type: frame.type, channel: undefined, version: undefined, tail, whole: Buffer.from(`event: ${frame.type}\n${tail}`) }
  const version = statsVersion(frame.data)
  return { type: 'stats', channel: CHANNEL_PREFIX + frame.data.negocio_id, version, tail, whole: Buffer.from(`event: stats\nid: ${version}\n${tail}`) }
}

/** A comment line, which EventSource ignores and proxies see as traffic (a stream has no pong). */
const HEARTBEAT = Buffer.from(':\n\n')

export class SseConnection extends Connection {
  readonly transport = 'sse' as const
  private state = CONNECTING
  /** The version of each channel the client has; undefined before its first stats. */
  private readonly versions: Array<string | undefined>
  /** Channels that had their first stats. */
  private seen = 0

  /** `socket`: a hijacked reply's. `resume`: Last-Event-ID's versions; a channel's first stats event is skipped when among them. */
  constructor (private readonly socket: Socket, access: Access, private readonly channelList: readonly string[], private resume: Set<string> | null, private readonly retryMs: number) {
    super(access)
    this.versions = new Array<string | undefined>(channelList.length)
    socket.once('close', () => { this.state = CLOSED })
  }

  start (headers: Record<string, string>): void {
    let head = `HTTP/1.1 200 OK\r\ndate: ${new Date().toUTCString()}\r\nconnection: close\r\n`
    for (const [name, value] of Object.entries(headers)) head += `${name}: ${value}\r\n`
    this.socket.write(`${head}\r\nretry: ${this.retryMs}\n\n`)
    if (this.state === CONNECTING) this.state = OPEN
  }

  get open (): boolean { return this.state === OPEN }
  get bufferedAmount (): number { return this.socket.writableLength }

  send (message: Prepared | string): void {
    if (this.state !== OPEN) return
    const event = typeof message === 'string' ? convert(message) : message.encoded(EVENT, convert)
    if (event.type !== 'stats') {
      this.socket.write(event.whole)
      return
    }
    const at = this.channelList.indexOf(event.channel as string)
    if (at === -1) return
    const version = event.version as string
    // Resumed: the first stats of a channel the client already has with these figures is not sent.
    if (this.versions[at] === undefined) {
      this.versions[at] = version
      const unchanged = this.resume?.has(version) === true
      if (++this.seen === this.channelList.length) this.resume = null
      if (unchanged) return
    }
    this.versions[at] = version
    // Several channels: the id names every channel's version, so a reconnect can skip each unchanged one.
    if (this.channelList.length === 1) {
      this.socket.write(event.whole)
      return
    }
    // Built in place: this runs per stream on every broadcast, where an array per event would add up.
    let id = ''
    for (const v of this.versions) if (v !== undefined) id = id === '' ? v : `${id}.${v}`
    this.socket.write(`event: stats\nid: ${id}\n${event.tail}`)
  }

  close (code: number, reason: string): void {
    if (this.state !== OPEN) return
    this.state = CLOSED
    // A restart sends every stream away at once: spread their reconnects over a few seconds.
    const retry = code === CLOSE.restart.code ? `retry: ${this.retryMs + randomInt(0, 4 * this.retryMs + 1)}\n` : ''
    this.socket.end(`${retry}event: close\ndata: ${JSON.stringify({ code, reason })}\n\n`)
  }

  terminate (): void {
    this.state = CLOSED
    this.socket.destroy()
  }

  heartbeat (): boolean {
    if (this.state === OPEN) this.socket.write(HEARTBEAT)
    return true
  }
}
