// The live core: the hub (this file) fans messages out to a channel's subscribers, live-stats.ts keeps the
// figures fresh, stats.ts is the SQL, messages.ts the frames. Transports are Connections (services/transports/).
import { CLOSE } from '../../protocol.js'

/** What a verified token lets a connection watch. */
export interface Access {
  sub?: string
  /** True for JWT_ADMIN_ROLE: any negocio. */
  all: boolean
  negocios: ReadonlySet<string>
  /** Unix seconds. */
  exp?: number
}

export function canWatch (access: Access, negocioId: string): boolean {
  return access.all || access.negocios.has(negocioId)
}

/** A message serialized once; `encoded` caches each transport's bytes, so a broadcast frames them once. */
export class Prepared {
  private encodings: Map<symbol, unknown> | undefined
  constructor (readonly text: string) {}

  encoded<T> (kind: symbol, make: (text: string) => T): T {
    this.encodings ??= new Map()
    let value = this.encodings.get(kind) as T | undefined
    if (value === undefined) {
      value = make(this.text)
      this.encodings.set(kind, value)
    }
    return value
  }
}

export type Transport = 'websocket' | 'sse'

/** An open connection and its channels; a transport extends it (one object per socket: idle ones are most of the memory). */
export abstract class Connection {
  readonly channels = new Set<string>()
  /** Newest message per channel held back while the peer is over the buffer bound; null otherwise. */
  pending: Map<string, Prepared> | null = null
  slowSince = 0
  /** The `exp` a token_expiring notice was sent for. */
  expiryNoticeFor = 0

  constructor (public access: Access) {}

  abstract readonly transport: Transport
  abstract readonly open: boolean
  abstract readonly bufferedAmount: number
  abstract send (message: Prepared | string): void
  abstract close (code: number, reason: string): void
  abstract terminate (): void
  /** False when the peer did not answer the last heartbeat and was cut. */
  abstract heartbeat (): boolean
}

export interface HubOptions {
  /** Buffered bytes past which a peer gets only the newest message per channel. Default 65536. */
  maxBufferedBytes?: number
  /** A peer over the bound for this long is closed with 1013. Default 30000. */
  stallTimeoutMs?: number
  now?: () => number
}

const STALLED_CLOSE_GRACE_MS = 2000
const FLUSH_INTERVAL_MS = 100

export function createHub (opts: HubOptions = {}) {
  const maxBuffered = opts.maxBufferedBytes ?? 65_536
  const stallTimeoutMs = opts.stallTimeoutMs ?? 30_000
  const now = opts.now ?? Date.now
  const connections = new Set<Connection>()
  const channels = new Map<string, Set<Connection>>()
  const emptyListeners: Array<(name: string) => void> = []
  let subscriptions = 0
  let stalled = 0
  const counters = { sent: 0, dropped: { superseded: 0, stalled: 0, closed: 0 } }
  const slow = new Set<Connection>()
  let flushTimer: ReturnType<typeof setInterval> | undefined

  function add<C extends Connection> (conn: C): C {
    connections.add(conn)
    return conn
  }

  function remove (conn: Connection): void {
    for (const name of conn.channels) leave(conn, name)
    conn.channels.clear()
    connections.delete(conn)
    conn.pending = null
    slow.delete(conn)
  }

  /** Returns false when the connection already followed the channel. */
  function subscribe (conn: Connection, name: string): boolean {
    if (conn.channels.has(name)) return false
    const subscribers = channels.get(name) ?? new Set<Connection>()
    channels.set(name, subscribers)
    subscribers.add(conn)
    conn.channels.add(name)
    subscriptions++
    return true
  }

  /** Returns false when the connection did not follow the channel. */
  function unsubscribe (conn: Connection, name: string): boolean {
    if (!conn.channels.delete(name)) return false
    leave(conn, name)
    conn.pending?.delete(name)
    return true
  }

  function leave (conn: Connection, name: string): void {
    const subscribers = channels.get(name)
    if (subscribers === undefined) return
    if (subscribers.delete(conn)) subscriptions--
    if (subscribers.size === 0) {
      channels.delete(name)
      for (const listener of emptyListeners) listener(name)
    }
  }

  /** Sends a last message to every subscriber and drops them from the channel (its negocio is gone). */
  function dropChannel (name: string, text: string): void {
    const subscribers = channels.get(name)
    if (subscribers === undefined) return
    const message = new Prepared(text)
    for (const conn of [...subscribers]) {
      unsubscribe(conn, name)
      if (conn.open) conn.send(message)
    }
  }

  /** Returns how many got it or will on drain; a slow peer keeps only each channel's newest (stats are state). */
  function publish (name: string, what: Prepared | string): number {
    const subscribers = channels.get(name)
    if (subscribers === undefined) return 0
    const message = typeof what === 'string' ? new Prepared(what) : what
    let sent = 0
    for (const conn of subscribers) {
      if (!conn.open) continue
      if (conn.pending !== null || conn.bufferedAmount > maxBuffered) hold(conn, name, message)
      else conn.send(message)
      sent++
    }
    counters.sent += sent
    return sent
  }

  function hold (conn: Connection, name: string, message: Prepared): void {
    if (conn.pending === null) {
      conn.pending = new Map()
      conn.slowSince = now()
      slow.add(conn)
      flushTimer ??= setInterval(flush, FLUSH_INTERVAL_MS).unref()
    }
    if (conn.pending.has(name)) counters.dropped.superseded++
    conn.pending.set(name, message)
  }

  function flush (): void {
    const at = now()
    for (const conn of slow) {
      const pending = conn.pending
      if (!conn.open) {
        counters.dropped.closed += pending?.size ?? 0
      } else if (conn.bufferedAmount <= maxBuffered) {
        conn.slowSince = 0
        if (pending !== null) for (const message of pending.values()) conn.send(message)
      } else if (at - conn.slowSince >= stallTimeoutMs) {
        counters.dropped.stalled += pending?.size ?? 0
        stalled++
        conn.close(CLOSE.tooSlow.code, CLOSE.tooSlow.reason)
        // The close waits behind what the peer does not read: cut it if it never gets there.
        setTimeout(() => conn.terminate(), STALLED_CLOSE_GRACE_MS).unref()
      } else {
        continue
      }
      conn.pending = null
      slow.delete(conn)
    }
    if (slow.size === 0) stop()
  }

  /** One heartbeat round for the connections `which` picks (one timer for all, none per socket). */
  function sweep (which: (conn: Connection) => boolean = () => true): void {
    for (const conn of connections) if (which(conn)) conn.heartbeat()
  }

  function closeAll (code: number, reason: string): void {
    stop()
    for (const conn of connections) if (conn.open) conn.close(code, reason)
  }

  function terminateAll (): void {
    for (const conn of connections) conn.terminate()
  }

  function stop (): void {
    clearInterval(flushTimer)
    flushTimer = undefined
  }

  return {
    add, remove, subscribe, unsubscribe, dropChannel, publish, sweep, flush, closeAll, terminateAll, stop,
    onEmpty: (listener: (name: string) => void) => { emptyListeners.push(listener) },
    counters,
    get stalledCount () { return stalled },
    get slowCount () { return slow.size },
    channelNames: () => channels.keys(),
    subscriberCount: (name: string) => channels.get(name)?.size ?? 0,
    get connectionCount () { return connections.size },
    get subscriptionCount () { return subscriptions },
    get channelCount () { return channels.size },
    get connections (): ReadonlySet<Connection> { return connections }
  }
}

export type Hub = ReturnType<typeof createHub>
