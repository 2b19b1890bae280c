import { createHmac, timingSafeEqual } from 'node:crypto'
import { Type } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import type { BusMessage } from './live-stats.js'
import { NEGOCIO_ID_PATTERN } from './protocol.js'

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

export type BusDropReason = 'unsigned' | 'bad_signature' | 'malformed' | 'implausible'
export type Decoded = { ok: true, message: BusMessage } | { ok: false, reason: BusDropReason }

export interface BusCodecOptions {
  /** Clock in ms, for the version check. */
  now?: () => number
  /** A version (the database's clock, µs) further ahead of this instance's clock than this is refused. Default 5 min. */
  maxAheadMs?: number
}

/** Length of a base64url HMAC-SHA256. */
const MAC_LENGTH = 43

/**
 * Signs and checks what instances tell each other. A payload is `<mac>.<json>`, the MAC an
 * HMAC-SHA256 of the JSON under a key derived from a secret only the instances know, so a database
 * role that may NOTIFY, or a client that may PUBLISH to Redis, cannot forge figures. A message that
 * is signed must still be exactly a BusMessage with plausible figures and a version not from the future
 * (one from 1e18 would make every genuine update look older).
 */
export function createBusCodec (secret: string, opts: BusCodecOptions = {}) {
  if (secret.length < 16) throw new Error('the bus secret must be at least 16 characters')
  const now = opts.now ?? Date.now
  const maxAheadMs = opts.maxAheadMs ?? 5 * 60_000
  const key = createHmac('sha256', secret).update('citas-live bus v1').digest()
  const mac = (body: string): string => createHmac('sha256', key).update(body).digest('base64url')

  return {
    /**
     * A name for the bus channel that only instances sharing the key use: two deployments on one
     * Redis with different secrets never hear each other (rather than refusing each other's messages).
     */
    channelTag: createHmac('sha256', key).update('channel').digest('hex').slice(0, 16),
    encode (message: BusMessage): string {
      const body = JSON.stringify(message)
      return `${mac(body)}.${body}`
    },
    decode (payload: string): Decoded {
      if (payload.length <= MAC_LENGTH || payload[MAC_LENGTH] !== '.') return { ok: false, reason: 'unsigned' }
      const body = payload.slice(MAC_LENGTH + 1)
      const given = Buffer.from(payload.slice(0, MAC_LENGTH))
      const wanted = Buffer.from(mac(body))
      if (given.length !== wanted.length || !timingSafeEqual(given, wanted)) return { ok: false, reason: 'bad_signature' }
      let parsed: unknown
      try {
        parsed = JSON.parse(body)
      } catch {
        return { ok: false, reason: 'malformed' }
      }
      if (!Value.Check(BusMessageSchema, parsed)) return { ok: false, reason: 'malformed' }
      if (!('snapshot' in parsed)) return { ok: true, message: parsed }
      const { stats, version } = parsed.snapshot
      const consistent = stats.citas_hoy <= stats.total_citas && stats.citas_completadas + stats.citas_canceladas <= stats.total_citas
      if (!consistent || version / 1000 > now() + maxAheadMs) return { ok: false, reason: 'implausible' }
      return { ok: true, message: parsed }
    }
  }
}

export type BusCodec = ReturnType<typeof createBusCodec>
