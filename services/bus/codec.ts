import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import { Type } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import type { BusMessage } from '../live/live-stats.js'
import { NEGOCIO_ID_PATTERN } from '../live/messages.js'

const Figure = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })

const Origin = Type.String({ minLength: 1, maxLength: 128 })

/** Most negocio ids one change message names (a NOTIFY payload must stay under 8,000 bytes). */
export const MAX_CHANGED_IDS = 50

/** A bus message, field by field: nothing else may ride along. */
export const BusMessageSchema = Type.Union([Type.Object({
  origin: Origin,
  snapshot: Type.Object({
    stats: Type.Object({
      negocio_id: Type.String({ pattern: NEGOCIO_ID_PATTERN }),
      citas_hoy: Figure,
      total_citas: Figure,
      citas_completadas: Figure,
      citas_canceladas: Figure,
      timestamp: Figure
    }, { additionalProperties: false }),
    dayEndsAt: Figure,
    version: Figure
  }, { additionalProperties: false })
}, { additionalProperties: false }), Type.Object({
  origin: Origin,
  // Negocio ids whose citas changed (change capture), or '*' for any.
  changed: Type.Array(Type.Union([Type.String({ pattern: NEGOCIO_ID_PATTERN }), Type.Literal('*')]), { minItems: 1, maxItems: MAX_CHANGED_IDS })
}, { additionalProperties: false })])

/** The schema as a compiled check: every received message goes through it. */
const checkMessage = TypeCompiler.Compile(BusMessageSchema)

export type BusDropReason = 'unsigned' | 'bad_signature' | 'malformed' | 'implausible' | 'replayed' | 'stale'

/** Every drop reason, for counters that start at zero. */
export const BUS_DROP_REASONS: readonly BusDropReason[] = ['unsigned', 'bad_signature', 'malformed', 'implausible', 'replayed', 'stale']
export type Decoded = { ok: true, message: BusMessage } | { ok: false, reason: BusDropReason }

export interface BusCodecOptions {
  /** Clock in ms, for the version check. */
  now?: () => number
  /** A version (the database's clock, µs) further ahead of this instance's clock than this is refused. Default 5 min. */
  maxAheadMs?: number
  /**
   * A message sent longer ago than this (or as far in the future: clocks of instances differ a
   * little), by the sender's clock, is refused as `stale`. Default 30 s.
   */
  freshnessMs?: number
}

/** Out-of-order messages of one sender accepted this far behind its newest (NOTIFYs sent from a pool may commit out of order). */
const SEQ_WINDOW = 1024
/** Senders remembered; the least recently heard is forgotten first (its old messages are then stale anyway). */
const MAX_SENDERS = 4096

/** The sequence numbers of one sender's messages seen within the window. */
interface SenderWindow { top: number, seen: Set<number> }

/** Length of a base64url HMAC-SHA256. */
const MAC_LENGTH = 43
/** Length of a sender's boot id (12 random bytes, base64url). */
const BOOT_LENGTH = 16
const HEADER_RE = /^[A-Za-z0-9_-]{16}\.(\d{1,16})\.(\d{1,16})\./

/**
 * Signs and checks what instances tell each other. A payload is `<mac>.<boot>.<seq>.<sent>.<json>`,
 * the MAC an HMAC-SHA256 of everything after it under a key derived from a secret only the
 * instances know, so a database role that may NOTIFY, or a client that may PUBLISH to Redis,
 * cannot forge figures. `boot` (random per process start), the sequence number and the time sent
 * let a receiver refuse a message seen before, or sent long ago: whoever may LISTEN or SUBSCRIBE
 * can copy signed messages and send them again. They come before the JSON, so a replay costs the
 * MAC and no parsing. A message that is signed and new must still be exactly a BusMessage with
 * plausible figures and a version not from the future (one from 1e18 would make every genuine
 * update look older).
 */
export function createBusCodec (secret: string, opts: BusCodecOptions = {}) {
  if (secret.length < 16) throw new Error('the bus secret must be at least 16 characters')
  const now = opts.now ?? Date.now
  const maxAheadMs = opts.maxAheadMs ?? 5 * 60_000
  const freshnessMs = opts.freshnessMs ?? 30_000
  const key = createHmac('sha256', secret).update('citas-live bus v1').digest()
  const mac = (body: string): string => createHmac('sha256', key).update(body).digest('base64url')
  const boot = randomBytes(12).toString('base64url')
  let seq = 0
  const senders = new Map<string, SenderWindow>()

  /** Whether this sender's message `n` is new; records it. */
  function firstSeen (sender: string, n: number): boolean {
    let w = senders.get(sender)
    if (w === undefined) {
      if (senders.size >= MAX_SENDERS) senders.delete(senders.keys().next().value as string)
      w = { top: 0, seen: new Set() }
    } else {
      senders.delete(sender) // re-inserted below: the map's order is the order senders were last heard
    }
    senders.set(sender, w)
    if (n <= w.top - SEQ_WINDOW || w.seen.has(n)) return false
    w.seen.add(n)
    if (n > w.top) {
      w.top = n
      if (w.seen.size > 2 * SEQ_WINDOW) for (const old of w.seen) if (old <= n - SEQ_WINDOW) w.seen.delete(old)
    }
    return true
  }

  return {
    /**
     * A name for the bus channel that only instances sharing the key use: two deployments on one
     * Redis with different secrets never hear each other (rather than refusing each other's messages).
     */
    channelTag: createHmac('sha256', key).update('channel').digest('hex').slice(0, 16),
    /** Whether a payload is one this codec sent (PostgreSQL hands a NOTIFY to its own sender's LISTEN too). */
    isOwn (payload: string): boolean {
      return payload.startsWith(boot, MAC_LENGTH + 1)
    },
    encode (message: BusMessage): string {
      const signed = `${boot}.${++seq}.${now()}.${JSON.stringify(message)}`
      return `${mac(signed)}.${signed}`
    },
    decode (payload: string): Decoded {
      if (payload.length <= MAC_LENGTH || payload[MAC_LENGTH] !== '.') return { ok: false, reason: 'unsigned' }
      const signed = payload.slice(MAC_LENGTH + 1)
      const given = Buffer.from(payload.slice(0, MAC_LENGTH))
      const wanted = Buffer.from(mac(signed))
      if (given.length !== wanted.length || !timingSafeEqual(given, wanted)) return { ok: false, reason: 'bad_signature' }
      const header = HEADER_RE.exec(signed)
      if (header === null) return { ok: false, reason: 'malformed' }
      if (Math.abs(now() - Number(header[2])) > freshnessMs) return { ok: false, reason: 'stale' }
      if (!firstSeen(signed.slice(0, BOOT_LENGTH), Number(header[1]))) return { ok: false, reason: 'replayed' }
      let message: unknown
      try {
        message = JSON.parse(signed.slice(header[0].length))
      } catch {
        return { ok: false, reason: 'malformed' }
      }
      if (!checkMessage.Check(message)) return { ok: false, reason: 'malformed' }
      if (!('snapshot' in message)) return { ok: true, message }
      const { stats, version } = message.snapshot
      const consistent = stats.citas_hoy <= stats.total_citas && stats.citas_completadas + stats.citas_canceladas <= stats.total_citas
      if (!consistent || version / 1000 > now() + maxAheadMs) return { ok: false, reason: 'implausible' }
      return { ok: true, message }
    }
  }
}

export type BusCodec = ReturnType<typeof createBusCodec>
