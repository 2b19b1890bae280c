import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import { Type } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import type { Snapshot } from '../live/stats.js'
import { NEGOCIO_ID_PATTERN } from '../live/messages.js'

/** Stats; changed ids nobody is known to show ('*': any); negocios shown; a notify for the leader; its answer (no snapshot: failed). */
export type BusMessage =
  | { origin: string, snapshots: Snapshot[] }
  | { origin: string, changed: string[] }
  | { origin: string, interest: string[] }
  | { origin: string, notify: string, ref: number }
  | { origin: string, answer: { to: string, ref: number }, snapshot?: Snapshot }

const Figure = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })
const Origin = Type.String({ minLength: 1, maxLength: 128 })

/** Most negocio ids one change or interest message names (a NOTIFY payload must stay under 8,000 bytes). */
export const MAX_CHANGED_IDS = 50
/** Most snapshots one message carries (about 270 bytes each at most). */
export const MAX_SNAPSHOTS = 25

/** A bus message, field by field: nothing else may ride along. */
const exact = { additionalProperties: false }
const NegocioId = Type.String({ pattern: NEGOCIO_ID_PATTERN })
const Ref = Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER })
const Snapshot = Type.Object({
  stats: Type.Object({ negocio_id: NegocioId, citas_hoy: Figure, total_citas: Figure, citas_completadas: Figure, citas_canceladas: Figure, timestamp: Figure }, exact),
  dayEndsAt: Figure,
  version: Figure
}, exact)
const Ids = Type.Array(NegocioId, { minItems: 1, maxItems: MAX_CHANGED_IDS })
const checkMessage = TypeCompiler.Compile(Type.Union([
  Type.Object({ origin: Origin, snapshots: Type.Array(Snapshot, { minItems: 1, maxItems: MAX_SNAPSHOTS }) }, exact),
  Type.Object({ origin: Origin, changed: Type.Array(Type.Union([NegocioId, Type.Literal('*')]), { minItems: 1, maxItems: MAX_CHANGED_IDS }) }, exact),
  Type.Object({ origin: Origin, interest: Ids }, exact),
  Type.Object({ origin: Origin, notify: NegocioId, ref: Ref }, exact),
  Type.Object({ origin: Origin, answer: Type.Object({ to: Origin, ref: Ref }, exact), snapshot: Type.Optional(Snapshot) }, exact)
]))

export const BUS_DROP_REASONS = ['unsigned', 'bad_signature', 'malformed', 'implausible', 'replayed', 'stale'] as const
export type BusDropReason = typeof BUS_DROP_REASONS[number]
type Decoded = { ok: true, message: BusMessage } | { ok: false, reason: BusDropReason }

/** A version (the database's clock, µs) this far ahead would make every genuine update look older. */
const MAX_AHEAD_MS = 5 * 60_000
/** Sent longer ago (or as far ahead: clocks differ a little) by the sender's clock: refused as stale. */
const FRESHNESS_MS = 30_000
/** NOTIFYs sent from a pool may commit out of order: a sender's messages this far behind its newest still count. */
const SEQ_WINDOW = 1024
/** The least recently heard sender is forgotten first (its old messages are stale by then anyway). */
const MAX_SENDERS = 4096
/** Lengths of a base64url HMAC-SHA256 and of a boot id (12 random bytes). */
const MAC_LENGTH = 43
const BOOT_LENGTH = 16
const HEADER_RE = /^[A-Za-z0-9_-]{16}\.(\d{1,16})\.(\d{1,16})\./

/** `<mac>.<boot>.<seq>.<sent>.<json>`: who may send cannot forge, who may listen cannot replay (a replay costs a MAC, no parsing). */
export function createBusCodec (secret: string, opts: { now?: () => number } = {}) {
  if (secret.length < 16) throw new Error('the bus secret must be at least 16 characters')
  const now = opts.now ?? Date.now
  const key = createHmac('sha256', secret).update('citas-live bus v2').digest()
  const mac = (body: string): string => createHmac('sha256', key).update(body).digest('base64url')
  const boot = randomBytes(12).toString('base64url')
  let seq = 0
  const senders = new Map<string, { top: number, seen: Set<number> }>()

  /** Whether this sender's message `n` is new; records it. */
  function firstSeen (sender: string, n: number): boolean {
    const w = senders.get(sender) ?? { top: 0, seen: new Set<number>() }
    // Re-inserted: the map's order is the order senders were last heard. A new one may evict the oldest.
    if (!senders.delete(sender) && senders.size >= MAX_SENDERS) senders.delete(senders.keys().next().value as string)
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
    /** Only instances sharing the key use this channel: deployments with other secrets never hear each other. */
    channelTag: createHmac('sha256', key).update('channel').digest('hex').slice(0, 16),
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
      if (Math.abs(now() - Number(header[2])) > FRESHNESS_MS) return { ok: false, reason: 'stale' }
      if (!firstSeen(signed.slice(0, BOOT_LENGTH), Number(header[1]))) return { ok: false, reason: 'replayed' }
      let message: unknown
      try {
        message = JSON.parse(signed.slice(header[0].length))
      } catch {
        return { ok: false, reason: 'malformed' }
      }
      if (!checkMessage.Check(message)) return { ok: false, reason: 'malformed' }
      const snapshots = 'snapshots' in message ? message.snapshots : 'snapshot' in message && message.snapshot !== undefined ? [message.snapshot] : []
      for (const { stats, version } of snapshots) {
        const consistent = stats.citas_hoy <= stats.total_citas && stats.citas_completadas + stats.citas_canceladas <= stats.total_citas
        if (!consistent || version / 1000 > now() + MAX_AHEAD_MS) return { ok: false, reason: 'implausible' }
      }
      return { ok: true, message }
    }
  }
}

export type BusCodec = ReturnType<typeof createBusCodec>
