import type { FastifyBaseLogger, FastifyServerOptions } from 'fastify'
import { requestForLog, scrubbingStream } from './redact.js'

/** pino options: tokens cut from logged URLs, credential headers censored, and every line scrubbed of JWTs. */
export function loggerOptions (level: string, destination: { write: (line: string) => unknown } = process.stdout): Exclude<FastifyServerOptions['logger'], boolean | undefined> {
  return {
    level,
    stream: scrubbingStream(destination),
    redact: {
      paths: [
        'req.headers.authorization',
        'req.headers["sec-websocket-protocol"]',
        'headers.authorization',
        'headers["sec-websocket-protocol"]',
        'token'
      ],
      censor: '[REDACTED]'
    },
    serializers: { req: requestForLog, err: serializeError },
    formatters: {
      // An error logged under another key than `err` gets the same treatment.
      log (object: Record<string, unknown>) {
        let out = object
        for (const [key, value] of Object.entries(object)) {
          if (key === 'err' || !isErrorLike(value)) continue
          if (out === object) out = { ...object } // the caller's object stays as it was
          out[key] = serializeError(value)
        }
        return out
      }
    }
  }
}

const MAX_DEPTH = 4
const MAX_CAUSES = 5

type ErrorLike = Error & Record<string, unknown>

function isErrorLike (value: unknown): value is ErrorLike {
  return value instanceof Error ||
    (typeof value === 'object' && value !== null && typeof (value as Error).message === 'string' && typeof (value as Error).stack === 'string')
}

// Anything may come as `err`. Data only: other objects (like the pg Client, settings and all, on a pool error) log as their class.
function serializeError (err: Error): SerializedError {
  return dataOnly(err, 0, new WeakSet()) as SerializedError
}

interface SerializedError { type: string, message: string, stack: string, [key: string]: unknown }

function errorFields (err: ErrorLike, depth: number, seen: WeakSet<object>): SerializedError {
  seen.add(err)
  const out: SerializedError = {
    type: typeof err.constructor === 'function' ? err.constructor.name : err.name,
    message: err.message,
    stack: err.stack ?? ''
  }
  let cause = err.cause
  for (let n = 0; n < MAX_CAUSES && isErrorLike(cause) && !seen.has(cause); n++) {
    seen.add(cause)
    out.message = `${out.message}: ${cause.message}`
    out.stack = `${out.stack}\ncaused by: ${String(cause.stack)}`
    cause = cause.cause
  }
  if (Array.isArray(err.errors)) out.aggregateErrors = err.errors.map(e => dataOnly(e, depth + 1, seen))
  for (const key in err) {
    if (key in out || key === 'cause' || key === 'errors') continue
    const value = dataOnly(err[key], depth + 1, seen)
    if (value !== undefined) out[key] = value
  }
  return out
}

function dataOnly (value: unknown, depth: number, seen: WeakSet<object>): unknown {
  if (typeof value === 'function') return undefined
  if (typeof value === 'bigint' || typeof value === 'symbol') return String(value)
  if (value === null || typeof value !== 'object') return value
  if (seen.has(value)) return '[Circular]'
  if (depth > MAX_DEPTH) return '[Object]'
  if (isErrorLike(value)) return errorFields(value, depth, seen)
  seen.add(value)
  if (Array.isArray(value)) return value.slice(0, 50).map(v => dataOnly(v, depth + 1, seen))
  const proto = Object.getPrototypeOf(value) as unknown
  if (proto !== Object.prototype && proto !== null) {
    if (value instanceof Date) return value.toISOString()
    return `[${(value as { constructor?: { name?: string } }).constructor?.name ?? 'Object'}]`
  }
  const out: Record<string, unknown> = {}
  for (const [key, v] of Object.entries(value)) {
    const data = dataOnly(v, depth + 1, seen)
    if (data !== undefined) out[key] = data
  }
  return out
}

type Bindings = Parameters<FastifyBaseLogger['child']>[0]
type ChildLoggerOptions = NonNullable<Parameters<FastifyBaseLogger['child']>[1]>
type LevelMethod = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal'
type Levelled = FastifyBaseLogger & { isLevelEnabled: (level: string) => boolean }

/** A request logger made only when it logs at an enabled level: pino's child costs each /ws or /sse connect microseconds. */
export function lazyChildLogger (this: unknown, logger: FastifyBaseLogger, bindings: Bindings, opts: ChildLoggerOptions): FastifyBaseLogger {
  const parent = logger as Partial<Levelled>
  if (typeof parent.isLevelEnabled !== 'function' || opts.level !== undefined) return logger.child(bindings, opts)
  return new LazyChild(logger as Levelled, bindings, opts) as unknown as FastifyBaseLogger
}

class LazyChild {
  private made: FastifyBaseLogger | undefined
  constructor (private readonly parent: Levelled, private readonly bindings: Bindings, private readonly opts: ChildLoggerOptions) {}
  private real (): FastifyBaseLogger { return (this.made ??= this.parent.child(this.bindings, this.opts)) }
  private log (level: LevelMethod, args: unknown[]): void {
    if (this.made === undefined && !this.parent.isLevelEnabled(level)) return
    ;(this.real()[level] as (...a: unknown[]) => void)(...args)
  }

  get level (): string { return this.made?.level ?? this.parent.level }
  set level (level: string) { this.real().level = level }
  trace (...args: unknown[]): void { this.log('trace', args) }
  debug (...args: unknown[]): void { this.log('debug', args) }
  info (...args: unknown[]): void { this.log('info', args) }
  warn (...args: unknown[]): void { this.log('warn', args) }
  error (...args: unknown[]): void { this.log('error', args) }
  fatal (...args: unknown[]): void { this.log('fatal', args) }
  silent (): void {}
  child (bindings: Bindings, opts?: ChildLoggerOptions): FastifyBaseLogger { return this.real().child(bindings, opts) }
  isLevelEnabled (level: string): boolean { return (this.made as Partial<Levelled> | undefined)?.isLevelEnabled?.(level) ?? this.parent.isLevelEnabled(level) }
}
