// Internals of `ws` (pinned exactly). `ws-send`: a broadcast's frame built once, written straight to each idle socket's TCP stream
// (private `_socket`, `_sender`, `_extensions`, checked per class), corked around a subscribe's two messages: 0.77x CPU per delivery.
// `ws-server-options`: a host server's undocumented `options.maxPayload`, to refuse one too small for a `refresh` frame (boot only).
import type { Duplex } from 'node:stream'
import type { WebSocket, WebSocketServer } from 'ws'
import { guard, type AdapterLog } from './guard.js'

/** The UTF-8 message (for ws's own send), and it as one unmasked, final text frame. */
interface PreparedFrame { readonly payload: Buffer, readonly frame: Buffer }

const OPEN = 1
/** ws's Sender state when no compression or blob read is pending (lib/sender.js DEFAULT). */
const SENDER_IDLE = 0

interface WsInternals {
  _socket?: (Duplex & { _writableState?: unknown }) | null
  _sender?: { _state?: unknown, _queue?: unknown, _firstFragment?: unknown, _bufferedBytes?: unknown } | null
  _extensions?: Record<string, unknown> | null
}

const sendGuard = guard('ws-send', 'each broadcast is written through ws.send() per socket, which costs more CPU per delivery')

/** FIN, opcode 1, no mask, 7-, 16- or 64-bit length. */
export function prepareFrame (message: string): PreparedFrame {
  const payload = Buffer.from(message)
  const length = payload.length
  const headerLength = length < 126 ? 2 : length < 65_536 ? 4 : 10
  const frame = Buffer.allocUnsafe(headerLength + length)
  frame[0] = 0x81
  if (length < 126) {
    frame[1] = length
  } else if (length < 65_536) {
    frame[1] = 126
    frame.writeUInt16BE(length, 2)
  } else {
    frame[1] = 127
    frame.writeUInt32BE(Math.floor(length / 2 ** 32), 2)
    frame.writeUInt32BE(length >>> 0, 6)
  }
  payload.copy(frame, headerLength)
  return { payload, frame }
}

/** The class last found to have the known shape (most sockets share one). */
let knownClass: unknown
/** A host's server may run another copy of ws: every class that passed. */
const passed = new WeakSet<object>()

/** Why an open socket lacks the fields the fast path reads; undefined when it has them. */
function shapeProblem (socket: WebSocket): string | undefined {
  const s = socket as unknown as WsInternals
  const raw = s._socket
  if (raw == null || typeof raw.write !== 'function' || typeof raw._writableState !== 'object') return 'no _socket stream'
  const sender = s._sender
  if (sender == null) return 'no _sender'
  if (typeof sender._state !== 'number' || !Array.isArray(sender._queue) || typeof sender._firstFragment !== 'boolean' ||
    typeof sender._bufferedBytes !== 'number') return 'the _sender fields changed'
  if (typeof s._extensions !== 'object' || s._extensions === null) return 'no _extensions'
  // bufferedAmount must count bytes written to the TCP socket directly, or the hub's bound breaks.
  if (socket.bufferedAmount !== raw.writableLength + sender._bufferedBytes) return 'bufferedAmount is not computed from the TCP socket'
  return undefined
}

/** Whether this socket may take the fast path; a class that fails turns it off for every socket (logged once). */
export function checkSocket (socket: WebSocket, log?: AdapterLog): boolean {
  if (sendGuard.onPublicPath(log)) return false
  const cls = socket.constructor
  if (cls === knownClass) return true
  if (!passed.has(cls)) {
    if (socket.readyState !== OPEN) return false
    const problem = shapeProblem(socket)
    if (problem !== undefined) {
      sendGuard.fallback(problem, log)
      return false
    }
    passed.add(cls)
  }
  knownClass = cls
  return true
}

/** False when the socket is not open. Through ws.send, which keeps ws's ordering, when ws has anything in flight. */
export function sendFrame (socket: WebSocket, prepared: PreparedFrame): boolean {
  if (socket.readyState !== OPEN) return false
  const fast = socket.constructor === knownClass ? !sendGuard.public : checkSocket(socket)
  const s = socket as unknown as WsInternals
  const sender = s._sender
  if (fast && sender != null && sender._state === SENDER_IDLE && (sender._queue as unknown[]).length === 0 &&
    sender._firstFragment === true && s._extensions?.['permessage-deflate'] === undefined) {
    ;(s._socket as Duplex).write(prepared.frame)
  } else {
    socket.send(prepared.payload, { binary: false })
  }
  return true
}

/** Runs `send` with the socket's TCP stream corked (checked class only): its messages leave in one write, 0.94x CPU per connect. */
export function inOneWrite (socket: WebSocket, send: () => void): void {
  const raw = socket.constructor === knownClass && !sendGuard.public ? (socket as unknown as WsInternals)._socket : null
  raw?.cork()
  try {
    send()
  } finally {
    raw?.uncork()
  }
}

const optionsGuard = guard('ws-server-options', 'the maxPayload of the host\'s WebSocket server is not checked: if it is below citas-live\'s, long refresh frames are closed with 1009')

/** The largest frame a host's WebSocketServer accepts (0: no limit); undefined, logged once, when unreadable. */
export function serverMaxPayload (wss: WebSocketServer, log?: AdapterLog): number | undefined {
  if (optionsGuard.onPublicPath(log)) return undefined
  const options = (wss as unknown as { options?: { maxPayload?: unknown } }).options
  if (typeof options !== 'object' || options === null || typeof options.maxPayload !== 'number') {
    optionsGuard.fallback('no options.maxPayload on the WebSocketServer', log)
    return undefined
  }
  return options.maxPayload
}
