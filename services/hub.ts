import type { WebSocket } from 'ws'
import { prepareFrame, sendFrame } from './frame.js'

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

/** One open WebSocket and the channels it follows. Kept small: the hub holds thousands. */
export interface Connection {
  readonly socket: WebSocket
  readonly channels: Set<string>
  access: Access
  /** Cleared by each heartbeat sweep, set again by the peer's pong. */
  alive: boolean
}

interface Channel {
  readonly subscribers: Set<Connection>
  /** Bumped on every publish: a snapshot computed before a publish is older than what was sent. */
  version: number
}

const OPEN = 1

/**
 * The channel hub: which connections follow which channel, and the fan-out. Plain data
 * structures, no I/O of its own beyond writing to sockets.
 */
export function createHub () {
  const connections = new Set<Connection>()
  const channels = new Map<string, Channel>()
  const emptyListeners: Array<(name: string) => void> = []

  function add (socket: WebSocket, access: Access): Connection {
    const conn: Connection = { socket, channels: new Set(), access, alive: true }
    connections.add(conn)
    return conn
  }

  /** Forgets a connection and every subscription it had; empty channels disappear. */
  function remove (conn: Connection): void {
    for (const name of conn.channels) leave(conn, name)
    conn.channels.clear()
    connections.delete(conn)
  }

  /** Returns false when the connection already followed the channel. */
  function subscribe (conn: Connection, name: string): boolean {
    if (conn.channels.has(name)) return false
    let channel = channels.get(name)
    if (channel === undefined) {
      channel = { subscribers: new Set(), version: 0 }
      channels.set(name, channel)
    }
    channel.subscribers.add(conn)
    conn.channels.add(name)
    return true
  }

  /** Returns false when the connection did not follow the channel. */
  function unsubscribe (conn: Connection, name: string): boolean {
    if (!conn.channels.delete(name)) return false
    leave(conn, name)
    return true
  }

  function leave (conn: Connection, name: string): void {
    const channel = channels.get(name)
    if (channel === undefined) return
    channel.subscribers.delete(conn)
    if (channel.subscribers.size === 0) {
      channels.delete(name)
      for (const listener of emptyListeners) listener(name)
    }
  }

  /** Sends one already-serialized message to every open subscriber; returns how many got it. */
  function publish (name: string, payload: string): number {
    const channel = channels.get(name)
    if (channel === undefined) return 0
    channel.version++
    // Framed once, the same bytes written to every subscriber.
    const frame = prepareFrame(payload)
    let sent = 0
    for (const conn of channel.subscribers) {
      if (sendFrame(conn.socket, frame)) sent++
    }
    return sent
  }

  /** Publish count of a channel, or -1 when nobody follows it. */
  function version (name: string): number {
    return channels.get(name)?.version ?? -1
  }

  /**
   * One heartbeat round for every connection: terminate those that did not answer the last
   * ping, ping the rest. One timer for all sockets instead of one per socket.
   */
  function sweep (): void {
    for (const conn of connections) {
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

  function closeAll (code: number, reason: string): void {
    for (const conn of connections) {
      if (conn.socket.readyState === OPEN) conn.socket.close(code, reason)
    }
  }

  return {
    add,
    remove,
    subscribe,
    unsubscribe,
    publish,
    version,
    sweep,
    closeAll,
    /** Calls `listener` whenever a channel loses its last subscriber. */
    onEmpty: (listener: (name: string) => void) => { emptyListeners.push(listener) },
    /** Names of the channels that have at least one subscriber. */
    channelNames: () => channels.keys(),
    subscriberCount: (name: string) => channels.get(name)?.subscribers.size ?? 0,
    get connectionCount () { return connections.size },
    get channelCount () { return channels.size },
    get connections (): ReadonlySet<Connection> { return connections }
  }
}

export type Hub = ReturnType<typeof createHub>
