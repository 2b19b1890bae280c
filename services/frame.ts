import * as ws from 'ws'
import type { WebSocket } from 'ws'
import type { Duplex } from 'node:stream'

/**
 * A text message framed once for a broadcast. `ws.send(string)` encodes the string, builds a
 * header and does a corked two-buffer write for every socket; a broadcast sends the same bytes
 * to all of them, so the frame is built once and each socket gets one write of one shared Buffer.
 */
export interface PreparedFrame {
  /** The UTF-8 message, for sockets that must go through ws's own sender. */
  readonly payload: Buffer
  /** Header and payload of one unmasked, final text frame, as ws itself would write it. */
  readonly frame: Buffer
}

interface FrameOptions {
  fin: boolean
  opcode: number
  mask: boolean
  readOnly: boolean
  rsv1: boolean
}

/** The parts of ws's WebSocket the fast path reads; not in ws's types, checked at runtime. */
interface WsInternals {
  _socket?: Duplex | null
  _sender?: { _state?: unknown, _queue?: unknown[], _firstFragment?: unknown } | null
  _extensions?: Record<string, unknown>
}

const OPEN = 1
/** ws's Sender state when no compression or blob read is pending (lib/sender.js DEFAULT). */
const SENDER_IDLE = 0

// ws exports Sender (its ESM entry too) but its type declarations do not.
const frameOf = (ws as unknown as { Sender: { frame: (data: Buffer, options: FrameOptions) => Buffer[] } }).Sender.frame

export function prepareFrame (message: string): PreparedFrame {
  const payload = Buffer.from(message)
  const parts = frameOf(payload, { fin: true, opcode: 1, mask: false, readOnly: true, rsv1: false })
  return { payload, frame: parts.length === 1 ? parts[0] as Buffer : Buffer.concat(parts) }
}

/**
 * Writes a prepared frame to a socket; false when the socket is not open. The shared bytes go
 * straight to the TCP socket only when ws has nothing of its own in flight for it (no queued or
 * compressing message, no fragmented message open, no permessage-deflate); otherwise the
 * message goes through ws.send, which keeps ws's ordering. Either way bufferedAmount counts it.
 */
export function sendFrame (socket: WebSocket, prepared: PreparedFrame): boolean {
  if (socket.readyState !== OPEN) return false
  const internals = socket as unknown as WsInternals
  const sender = internals._sender
  const raw = internals._socket
  if (raw != null && sender != null && sender._state === SENDER_IDLE && sender._queue?.length === 0 &&
    sender._firstFragment === true && internals._extensions?.['permessage-deflate'] === undefined) {
    raw.write(prepared.frame)
  } else {
    socket.send(prepared.payload, { binary: false })
  }
  return true
}
