// The hub's Connections: a WebSocket (this file: socket, heartbeat, message bucket) and a Server-Sent Events
// stream (sse.ts). Dependency internals they use are in services/adapters/.
import type { WebSocket } from 'ws'
import { Connection, type Access, type Prepared } from '../live/hub.js'
import { inOneWrite, prepareFrame, sendFrame } from '../adapters/ws.js'
import type { BucketState } from './token-bucket.js'

const OPEN = 1
const FRAME = Symbol('websocket frame')

/** A socket's connection, bucket and what its close releases, in one object (idle sockets are most of the memory). */
export class WsConnection extends Connection implements BucketState {
  readonly transport = 'websocket' as const
  /** Cleared by each heartbeat, set again by the peer's pong. */
  alive = true
  last = Date.now()
  refused = 0

  constructor (
    readonly socket: WebSocket,
    access: Access,
    /** The message bucket starts full: the burst. */
    public tokens: number,
    /** The keys the per-user and per-IP limits counted this socket under: null where one did not. */
    readonly userKey: string | null,
    readonly ip: string | null
  ) {
    super(access)
  }

  get open (): boolean { return this.socket.readyState === OPEN }
  get bufferedAmount (): number { return this.socket.bufferedAmount }

  send (message: Prepared | string): void {
    if (typeof message !== 'string') sendFrame(this.socket, message.encoded(FRAME, prepareFrame))
    else if (this.socket.readyState === OPEN) this.socket.send(message)
  }

  /** The messages `send` writes leave in one write. */
  batch (send: () => void): void {
    inOneWrite(this.socket, send)
  }

  close (code: number, reason: string): void { this.socket.close(code, reason) }
  terminate (): void { this.socket.terminate() }

  heartbeat (): boolean {
    if (!this.alive) {
      this.socket.terminate()
      return false
    }
    this.alive = false
    try {
      this.socket.ping()
    } catch {
      this.socket.terminate()
      return false
    }
    return true
  }
}
