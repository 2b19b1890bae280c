/**
 * The internals of `ws` (pinned exactly in package.json) that citas-live uses, behind checks.
 *
 * 1. Broadcast frames (`ws-send`, on the fan-out path). `ws.send()` builds a header and does a
 *    corked two-buffer write for every socket; a broadcast sends the same bytes to all of them, so
 *    the frame is built once (RFC 6455, no ws code) and each socket gets one write of one shared
 *    Buffer, straight to its TCP socket, when ws has nothing of its own in flight on it. That needs
 *    ws's private `_socket`, `_sender` (`_state`, `_queue`, `_firstFragment`) and `_extensions`.
 *    Public path: `ws.send(payload)` with the payload encoded once for the broadcast. The same
 *    guard covers corking `_socket` around a subscribe's two messages (`inOneWrite`), so they
 *    leave in one write; public path: one write each.
 * 2. The settings of a host's WebSocketServer (`ws-server-options`, at boot): its undocumented
 *    `options.maxPayload`, to check that a host's server accepts the frames citas-live must take.
 *    Public path: no check (a too-small host limit then closes long `refresh` frames with 1009).
 */
import type { Duplex } from 'node:stream'
import type { WebSocket, WebSocketServer } from 'ws'
import { guard, type AdapterLog } from './guard.js'

export interface PreparedFrame {
  /** The UTF-8 message, for sockets that go through ws's own send. */
  readonly payload: Buffer
  /** Header and payload of one unmasked, final text frame (RFC 6455 section 5.2). */
  readonly frame: Buffer
}

const OPEN = 1
/** ws's Sender state when no compression or blob read is pending (lib/sender.js DEFAULT). */
const SENDER_IDLE = 0

/** The parts of ws's WebSocket the fast path reads. */
interface WsInternals {
  _socket?: (Duplex & { _writableState?: unknown }) | null
  _sender?: { _state?: unknown, _queue?: unknown, _firstFragment?: unknown, _bufferedBytes?: unknown } | null
  _extensions?: Record<string, unknown> | null
}

const sendGuard = guard('ws-send', 'each broadcast is written through ws.send() per socket, which costs more CPU per delivery')

/** Builds the frame of a text message once: FIN, opcode 1, no mask, 7-, 16- or 64-bit length. */
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

/** The WebSocket class whose instances were last found to have the known shape (most sockets share one). */
let knownClass: unknown
/** Every class that passed: a host's server may run another copy of ws. One that fails turns the fast path off. */
const passed = new WeakSet<object>()

/** Why an open socket lacks the fields the fast path reads, with the types ws 8 gives them; undefined when it has them. */
function shapeProblem (socket: WebSocket): string | undefined {
  const s = socket as unknown as WsInternals
  const raw = s._socket
  if (raw == null || typeof raw.write !== 'function' || typeof raw._writableState !== 'object') return 'no _socket stream'
  const sender = s._sender
  if (sender == null) return 'no _sender'
  if (typeof sender._state !== 'number' || !Array.isArray(sender._queue) || typeof sender._firstFragment !== 'boolean' || typeof sender._bufferedBytes !== 'number') {
    return 'the _sender fields changed'
  }
  if (typeof s._extensions !== 'object' || s._extensions === null) return 'no _extensions'
  // bufferedAmount must count bytes written to the TCP socket directly, or the hub's bound breaks.
  if (socket.bufferedAmount !== raw.writableLength + sender._bufferedBytes) return 'bufferedAmount is not computed from the TCP socket'
  return undefined
}

/**
 * Checks the class of an open socket, once per class: sockets of a class that passed take the
 * fast path. Returns whether this socket may; when a class does not pass, the fast path is off
 * for every socket from then on, and that is logged once. The ws route calls it for every new
 * socket, so the log has a logger at hand.
 */
export function checkSocket (socket: WebSocket, log?: AdapterLog): boolean {
  if (sendGuard.public) {
    sendGuard.fallback('forced', log)
    return false
  }
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

/**
 * Writes a prepared frame to a socket; false when the socket is not open. The shared bytes go
 * straight to the TCP socket only for a socket of a checked class on which ws has nothing of its
 * own in flight (no queued or compressing message, no fragmented message open, no
 * permessage-deflate); otherwise through ws.send, which keeps ws's ordering. Either way
 * bufferedAmount counts them.
 */
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

/**
 * Runs `send` with the socket's TCP stream corked, so the messages it sends leave in one write
 * (one system call, one packet) instead of one each: a subscribe's reply and the channel's current
 * stats. Through ws's private `_socket`, for a socket of a checked class (ws-send); otherwise
 * `send` just runs.
 */
export function inOneWrite (socket: WebSocket, send: () => void): void {
  const raw = socket.constructor === knownClass && !sendGuard.public ? (socket as unknown as WsInternals)._socket : null
  if (raw == null) {
    send()
    return
  }
  raw.cork()
  try {
    send()
  } finally {
    raw.uncork()
  }
}

const optionsGuard = guard('ws-server-options', 'the maxPayload of the host\'s WebSocket server is not checked: if it is below citas-live\'s, long refresh frames are closed with 1009')

/**
 * The largest frame a host's WebSocketServer accepts (0: no limit), from its undocumented
 * `options`; undefined, after one log line, when they cannot be read.
 */
export function serverMaxPayload (wss: WebSocketServer, log?: AdapterLog): number | undefined {
  if (optionsGuard.public) {
    optionsGuard.fallback('forced', log)
    return undefined
  }
  const options = (wss as unknown as { options?: { maxPayload?: unknown } }).options
  if (typeof options !== 'object' || options === null || typeof options.maxPayload !== 'number') {
    optionsGuard.fallback('no options.maxPayload on the WebSocketServer', log)
    return undefined
  }
  return options.maxPayload
}
