import type { WebSocket } from 'ws'
import { CLOSE } from '../protocol.js'
import { prepareFrame, sendFrame, type PreparedFrame } from './adapters/ws.js'

/** What a verified token lets a connection watch. */
export interface Access {
  /** Subject (user) of the token, when it has one. */
  sub?: string
  /** True for JWT_ADMIN_ROLE: any negocio. */
  all: boolean
  negocios: ReadonlySet<string>
  /** Token expiry in unix seconds, when it has one. */
  exp?: number
}

export function canWatch (access: Access, negocioId: string): boolean {
  return access.all || access.negocios.has(negocioId)
}

/**
 * What the hub writes to: a ws WebSocket, or an SSE stream (services/sse.ts) that turns the same
 * serialized messages into events. `readyState` uses WebSocket's numbers (1 = open).
 */
export interface Peer {
  readonly readyState: number
  /** Bytes written but not yet handed to the kernel. */
  readonly bufferedAmount: number
  send: (payload: string) => void
  close: (code: number, reason: string) => void
  terminate: () => void
  ping: () => void
  once: (event: 'close', listener: () => void) => unknown
}

/** How a connection reaches its peer: a WebSocket, or a Server-Sent Events stream (server to browser only). */
export type Transport = 'websocket' | 'sse'

/**
 * One open WebSocket or SSE stream and the channels it follows. Kept small: the hub holds
 * thousands. A class, so every field is in the object itself from the start (no out-of-object
 * property array), and a transport can extend it with its own per-socket state (routes/ws.ts)
 * instead of hanging a second object off the socket.
 */
export class Connection {
  readonly channels = new Set<string>()
  /** Cleared by each heartbeat sweep, set again by the peer's pong. */
  alive = true
  /** Newest payload per channel held back while the socket's send buffer is over the bound; null when draining normally. */
  pending: Map<string, string> | null = null
  /** When the socket went over the bound (ms), 0 when it is not. */
  slowSince = 0
  /** The `exp` a token_expiring notice was sent for, 0 when none. */
  expiryNoticeFor = 0

  constructor (readonly socket: Peer, public access: Access, readonly transport: Transport = 'websocket') {}
}

export interface HubOptions {
  /**
   * Bytes a socket may have buffered (ws `bufferedAmount`) before the hub stops writing to it and
   * keeps only the newest payload per channel. Default 65536.
   */
  maxBufferedBytes?: number
  /** A socket over the bound for this long is closed with 1013. Default 30000. */
  stallTimeoutMs?: number
  /** How often sockets over the bound are checked for drain. Default 100. */
  flushIntervalMs?: number
  /** Clock, injectable for tests. */
  now?: () => number
}

/** A stalled socket has this long to answer its 1013 close before it is cut (it is not reading). */
export const STALLED_CLOSE_GRACE_MS = 2000

interface Channel {
  readonly subscribers: Set<Connection>
}

const OPEN = 1

/**
 * The channel hub: which connections follow which channel, and the fan-out. Plain data
 * structures, no I/O of its own beyond writing to sockets.
 */
export function createHub (opts: HubOptions = {}) {
  const maxBuffered = opts.maxBufferedBytes ?? 65_536
  const stallTimeoutMs = opts.stallTimeoutMs ?? 30_000
  const flushIntervalMs = opts.flushIntervalMs ?? 100
  const now = opts.now ?? Date.now
  const connections = new Set<Connection>()
  const channels = new Map<string, Channel>()
  const emptyListeners: Array<(name: string) => void> = []
  let subscriptions = 0
  /** Plain counters, read by the metrics plugin at scrape time. */
  const counters = { sent: 0, dropped: { superseded: 0, stalled: 0, closed: 0 } as Record<string, number> }
  /** Connections over the buffer bound; the only ones the flush timer looks at. */
  const slow = new Set<Connection>()
  let flushTimer: ReturnType<typeof setInterval> | undefined
  let stalled = 0
  /** The connections whose transport is SSE (the heartbeat's; the rest are WebSockets). */
  const streams = new Set<Connection>()

  /** Starts holding a connection (`new Connection(peer, access, transport)`, or a transport's subclass). */
  function add<C extends Connection> (conn: C): C {
    connections.add(conn)
    if (conn.transport === 'sse') streams.add(conn)
    return conn
  }

  /** Forgets a connection and every subscription it had; empty channels disappear. */
  function remove (conn: Connection): void {
    for (const name of conn.channels) leave(conn, name)
    conn.channels.clear()
    connections.delete(conn)
    streams.delete(conn)
    conn.pending = null
    slow.delete(conn)
  }

  /** Returns false when the connection already followed the channel. */
  function subscribe (conn: Connection, name: string): boolean {
    if (conn.channels.has(name)) return false
    let channel = channels.get(name)
    if (channel === undefined) {
      channel = { subscribers: new Set() }
      channels.set(name, channel)
    }
    channel.subscribers.add(conn)
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
    const channel = channels.get(name)
    if (channel === undefined) return
    if (channel.subscribers.delete(conn)) subscriptions--
    if (channel.subscribers.size === 0) {
      channels.delete(name)
      for (const listener of emptyListeners) listener(name)
    }
  }

  /** Sends a last message to every subscriber of a channel and drops them all from it (its negocio is gone). */
  function dropChannel (name: string, payload: string): number {
    const channel = channels.get(name)
    if (channel === undefined) return 0
    let sent = 0
    for (const conn of [...channel.subscribers]) {
      unsubscribe(conn, name)
      if (conn.socket.readyState === OPEN) {
        conn.socket.send(payload)
        sent++
      }
    }
    return sent
  }

  /**
   * Sends one already-serialized message to every open subscriber; returns how many got it (or will
   * get it once their socket drains). Stats are state: a socket over the buffer bound keeps only the
   * newest payload of each channel, written when it drains.
   */
  function publish (name: string, payload: string): number {
    const channel = channels.get(name)
    if (channel === undefined) return 0
    // Framed once, the same bytes written to every WebSocket subscriber (SSE streams share theirs too, services/sse.ts).
    let frame: PreparedFrame | undefined
    let sent = 0
    for (const conn of channel.subscribers) {
      const socket = conn.socket
      if (socket.readyState !== OPEN) continue
      if (conn.pending !== null || socket.bufferedAmount > maxBuffered) hold(conn, name, payload)
      // Fast path: the frame built once for this broadcast, the same bytes to every socket.
      else if (conn.transport === 'websocket') sendFrame(socket as WebSocket, frame ??= prepareFrame(payload))
      else socket.send(payload)
      sent++
    }
    counters.sent += sent
    return sent
  }

  function hold (conn: Connection, name: string, payload: string): void {
    if (conn.pending === null) {
      conn.pending = new Map()
      conn.slowSince = now()
      slow.add(conn)
      flushTimer ??= setInterval(flush, flushIntervalMs)
      flushTimer.unref()
    }
    if (conn.pending.has(name)) counters.dropped.superseded = (counters.dropped.superseded ?? 0) + 1
    conn.pending.set(name, payload)
  }

  /** Writes held payloads to sockets that drained; closes with 1013 those stalled past the deadline. */
  function flush (): void {
    const at = now()
    for (const conn of slow) {
      const socket = conn.socket
      if (socket.readyState !== OPEN) {
        counters.dropped.closed = (counters.dropped.closed ?? 0) + (conn.pending?.size ?? 0)
        conn.pending = null
        slow.delete(conn)
      } else if (socket.bufferedAmount <= maxBuffered) {
        const pending = conn.pending
        conn.pending = null
        conn.slowSince = 0
        slow.delete(conn)
        if (pending !== null) for (const payload of pending.values()) socket.send(payload)
      } else if (at - conn.slowSince >= stallTimeoutMs) {
        counters.dropped.stalled = (counters.dropped.stalled ?? 0) + (conn.pending?.size ?? 0)
        conn.pending = null
        slow.delete(conn)
        stalled++
        socket.close(CLOSE.tooSlow.code, CLOSE.tooSlow.reason)
        // The close frame waits behind the unread buffer: without this, ws would hold it for 30 s.
        const cut = setTimeout(() => socket.terminate(), STALLED_CLOSE_GRACE_MS)
        cut.unref()
        socket.once('close', () => clearTimeout(cut))
      }
    }
    if (slow.size === 0 && flushTimer !== undefined) {
      clearInterval(flushTimer)
      flushTimer = undefined
    }
  }

  /**
   * One heartbeat round for every connection: terminate those that did not answer the last
   * ping, ping the rest. One timer for all sockets instead of one per socket.
   */
  function sweep (): void {
    for (const conn of connections) {
      // An SSE stream has no pong: a dead peer shows as a write error, or as a stall (see flush).
      if (conn.transport === 'sse') continue
      if (!conn.alive) {
        conn.socket.terminate()
        continue
      }
      conn.alive = false
      try {
        conn.socket.ping()
      } catch {
        conn.socket.terminate()
      }
    }
  }

  /** Writes a heartbeat (an SSE comment) to every SSE stream, so proxies see traffic on an idle one. */
  function heartbeatStreams (): void {
    for (const conn of streams) {
      if (conn.socket.readyState === OPEN) conn.socket.ping()
    }
  }

  function closeAll (code: number, reason: string): void {
    stop()
    for (const conn of connections) {
      if (conn.socket.readyState === OPEN) conn.socket.close(code, reason)
    }
  }

  /** Cuts every socket still open (after closeAll, for peers that never answer the close). */
  function terminateAll (): void {
    for (const conn of connections) conn.socket.terminate()
  }

  function stop (): void {
    if (flushTimer !== undefined) clearInterval(flushTimer)
    flushTimer = undefined
  }

  return {
    add,
    remove,
    subscribe,
    unsubscribe,
    dropChannel,
    publish,
    sweep,
    heartbeatStreams,
    flush,
    closeAll,
    /** Calls `listener` whenever a channel loses its last subscriber. */
    onEmpty: (listener: (name: string) => void) => { emptyListeners.push(listener) },
    terminateAll,
    stop,
    /** Payloads replaced by a newer one before a slow socket drained. */
    get droppedCount () { return counters.dropped.superseded ?? 0 },
    /** Sockets closed with 1013 for staying over the buffer bound. */
    get stalledCount () { return stalled },
    get slowCount () { return slow.size },
    /** Names of the channels that have at least one subscriber. */
    channelNames: () => channels.keys(),
    subscriberCount: (name: string) => channels.get(name)?.subscribers.size ?? 0,
    get connectionCount () { return connections.size },
    /** Connections whose transport is SSE; the rest of connectionCount are WebSockets. */
    get sseCount () { return streams.size },
    get subscriptionCount () { return subscriptions },
    counters,
    get channelCount () { return channels.size },
    get connections (): ReadonlySet<Connection> { return connections }
  }
}

export type Hub = ReturnType<typeof createHub>
