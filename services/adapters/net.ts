/**
 * The internal of Node's `net` that citas-live uses, behind checks (`net-write`, on the fan-out path).
 *
 * A broadcast writes one small shared Buffer to thousands of TCP sockets, each idle until then.
 * `socket.write()` runs the whole Writable machinery for it: state checks, a write request the
 * stream tracks, and a `process.nextTick` after every write to run its after-write bookkeeping.
 * When the socket's stream has nothing buffered, corked or in flight, none of that can change
 * what reaches the wire: the bytes would go straight to the TCP handle. So a broadcast hands them
 * to the step below, `Socket#_writeGeneric` (Node's own, which still does the handle write, its
 * error and the socket's timeout), and skips the Writable layer.
 *
 * What it keeps true:
 * - Order: only a socket whose stream has nothing queued (`writableLength` 0, not corked, not
 *   connecting) and whose handle has no bytes waiting in libuv (`writeQueueSize` 0) is written to
 *   this way; everything after goes through the handle's queue in order.
 * - The slow-consumer bound: a write the kernel does not take at once leaves bytes in libuv, which
 *   `writableLength` (and so ws's `bufferedAmount`) does not count. The next broadcast to that
 *   socket then takes the public path, whose bytes are counted: at most one frame goes uncounted.
 * - Errors: a write that fails destroys the socket with the error, as the stream would.
 *
 * Public path: `socket.write(buffer)`.
 */
import { Socket } from 'node:net'
import { guard, type AdapterLog } from './guard.js'

interface SocketInternals {
  _handle?: { writeQueueSize?: unknown } | null
  connecting: boolean
  _writeGeneric: (writev: boolean, data: Buffer, encoding: string, cb: (this: unknown, err?: Error | null) => void) => void
}

interface WriteRequest { handle?: unknown }

/** Whether the first socket had the shape the direct write relies on. */
let checked = false
const writeGuard = guard('net-write', 'each broadcast is written through socket.write(), which costs more CPU per delivery', () => { checked = false })

/** Sockets whose direct write went asynchronous (libuv holds the rest), by handle, until it completes. */
const inFlight = new Map<unknown, Socket>()
/** The error a direct write reported synchronously (the callback gets no socket then). */
let syncError: Error | null = null

/** Called by Node when a direct write is done: synchronously (this: the request) or when libuv finishes. */
function afterDirectWrite (this: unknown, err?: Error | null): void {
  // Most writes complete synchronously, before any is in flight: no lookup on the broadcast's path.
  if (inFlight.size === 0) {
    if (err != null) syncError = err
    return
  }
  const handle = (this as WriteRequest | undefined)?.handle
  const socket = handle === undefined ? undefined : inFlight.get(handle)
  if (socket !== undefined) inFlight.delete(handle)
  if (err == null) return
  if (socket !== undefined) socket.destroy(err)
  else syncError = err
}

/** Whether this Node's sockets have what the direct write relies on (checked once, on the first socket). */
function shapeProblem (socket: Socket): string | undefined {
  const s = socket as unknown as SocketInternals
  if (typeof s._writeGeneric !== 'function' || s._writeGeneric.length !== 4) return 'no Socket#_writeGeneric(writev, data, encoding, cb)'
  if (s._handle == null || typeof s._handle.writeQueueSize !== 'number') return 'no _handle.writeQueueSize'
  if (typeof socket.writableLength !== 'number' || typeof socket.writableCorked !== 'number') return 'no writableLength or writableCorked'
  return undefined
}

/**
 * Writes a Buffer to a socket, skipping the Writable layer when it is a plain TCP socket (not
 * TLS, whose handle encrypts) that is idle (see the top of this file), else through `socket.write`. The caller must not write to the socket in
 * another way between its checks and this call (nothing awaits in between).
 */
export function writeDirect (socket: Socket, data: Buffer, log?: AdapterLog): void {
  const s = socket as unknown as SocketInternals
  const handle = s._handle
  if (writeGuard.public || Object.getPrototypeOf(socket) !== Socket.prototype || handle == null || socket.writableLength !== 0 || socket.writableCorked !== 0 ||
    s.connecting || socket.destroyed || !socket.writable || handle.writeQueueSize !== 0 || !usable(socket, log)) {
    socket.write(data)
    return
  }
  s._writeGeneric(false, data, 'buffer', afterDirectWrite)
  if (syncError !== null) {
    const err = syncError
    syncError = null
    socket.destroy(err)
  } else if (handle.writeQueueSize !== 0) {
    inFlight.set(handle, socket)
  }
}

function usable (socket: Socket, log?: AdapterLog): boolean {
  if (checked) return true
  const problem = shapeProblem(socket)
  if (problem !== undefined) {
    writeGuard.fallback(problem, log)
    return false
  }
  checked = true
  return true
}

/**
 * Checks a new socket's shape for the direct write (once per process), saying so in the log when
 * it is not the known one or the adapter is forced public. The routes call it for each new socket,
 * which has a logger at hand; writeDirect itself checks too, silently.
 */
export function checkDirectWrite (socket: Socket, log?: AdapterLog): boolean {
  if (writeGuard.public) {
    writeGuard.fallback('forced', log)
    return false
  }
  return usable(socket, log)
}

/** How many direct writes are waiting for libuv (tests: a slow reader's socket). */
export function directWritesInFlight (): number {
  return inFlight.size
}
