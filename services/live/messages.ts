import { CHANNEL_PREFIX, MAX_ID_LENGTH, NEGOCIO_ID_PATTERN, type ErrorCode, type MessageId, type ServerFrame, type Stats } from '../../protocol.js'

// The server's side of ../protocol.ts: parsing client frames, serializing its own.
export { NEGOCIO_ID_PATTERN }

const negocioIdRe = new RegExp(NEGOCIO_ID_PATTERN)

export function isNegocioId (value: unknown): value is string {
  return typeof value === 'string' && negocioIdRe.test(value)
}

export function channelFor (negocioId: string): string {
  return CHANNEL_PREFIX + negocioId
}

export function negocioOf (channel: string): string | null {
  if (!channel.startsWith(CHANNEL_PREFIX)) return null
  const id = channel.slice(CHANNEL_PREFIX.length)
  return negocioIdRe.test(id) ? id : null
}

/** A ClientFrame of the protocol module with its `data` flattened. */
export type ClientMessage =
  | { type: 'subscribe', channel: string, id?: MessageId }
  | { type: 'unsubscribe', channel: string, id?: MessageId }
  | { type: 'ping', id?: MessageId }
  | { type: 'refresh', token: string, id?: MessageId }

export type ParseResult =
  | { ok: true, message: ClientMessage }
  | { ok: false, code: ErrorCode, message: string, id?: MessageId }

function readId (value: unknown): MessageId | undefined {
  if (typeof value === 'string' && value.length <= MAX_ID_LENGTH) return value
  if (typeof value === 'number' && Number.isFinite(value)) return value
  return undefined
}

function isPlainObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** Never throws: a malformed frame is { ok: false } with the code and a message for the client. */
export function parseClientMessage (raw: string): ParseResult {
  let value: unknown
  try {
    value = JSON.parse(raw)
  } catch {
    return { ok: false, code: 'bad_request', message: 'message is not valid JSON' }
  }
  if (!isPlainObject(value)) return { ok: false, code: 'bad_request', message: 'message must be a JSON object' }
  const id = Object.hasOwn(value, 'id') ? readId(value.id) : undefined
  const withId = <T extends object>(m: T): T & { id?: MessageId } => (id === undefined ? m : { ...m, id })
  const fail = (code: ErrorCode, message: string): ParseResult => ({ ok: false, ...withId({ code, message }) })
  if (Object.hasOwn(value, 'id') && id === undefined) {
    return fail('bad_request', `id must be a string of at most ${MAX_ID_LENGTH} characters or a finite number`)
  }
  const type = value.type
  if (typeof type !== 'string') return fail('bad_request', 'type must be a string')
  switch (type) {
    case 'ping':
      return { ok: true, message: withId({ type: 'ping' as const }) }
    case 'subscribe':
    case 'unsubscribe': {
      const data = value.data
      if (!isPlainObject(data)) return fail('bad_request', `${type} needs data: {"channel": "estadisticas:<negocio_id>"}`)
      const channel = data.channel
      if (typeof channel !== 'string') return fail('bad_request', 'data.channel must be a string')
      if (negocioOf(channel) === null) {
        return fail('invalid_channel', 'channel must be "estadisticas:<negocio_id>" with a negocio_id of 1-64 characters [A-Za-z0-9_-]')
      }
      return { ok: true, message: withId({ type, channel }) }
    }
    case 'refresh': {
      const data = value.data
      if (!isPlainObject(data) || typeof data.token !== 'string' || data.token === '') {
        return fail('bad_request', 'refresh needs data: {"token": "<a fresh token>"}')
      }
      return { ok: true, message: withId({ type, token: data.token }) }
    }
    default:
      return fail('bad_request', `unknown message type ${JSON.stringify(type.slice(0, 32))}`)
  }
}

// An `id: undefined` is left out by JSON.stringify: the frame has no id then.
const serialize = (frame: ServerFrame): string => JSON.stringify(frame)

export function statsMessage (stats: Stats): string {
  return serialize({ type: 'stats', data: stats })
}

/** Built without JSON.stringify (a sixth of the time, once per subscribe): a parsed `channel` needs no escaping; the id does. */
export function replyMessage (type: 'subscribed' | 'unsubscribed', channel: string, id?: MessageId): string {
  return id === undefined
    ? `{"type":"${type}","data":{"channel":"${channel}"}}`
    : `{"type":"${type}","id":${JSON.stringify(id)},"data":{"channel":"${channel}"}}`
}

/** The new token's expiry (unix seconds), null when it has none. */
export function refreshedMessage (expiresAt: number | undefined, id?: MessageId): string {
  return serialize({ type: 'refreshed', id, data: { expires_at: expiresAt ?? null } })
}

export function tokenExpiringMessage (expiresAt: number): string {
  return serialize({ type: 'token_expiring', data: { expires_at: expiresAt } })
}

export function channelErrorMessage (code: ErrorCode, message: string, channel: string): string {
  return serialize({ type: 'error', data: { code, message, channel } })
}

export function revokedMessage (channel: string): string {
  return channelErrorMessage('forbidden', `your token no longer allows ${channel}`, channel)
}

export function goneMessage (channel: string): string {
  return channelErrorMessage('not_found', `${channel} no longer exists`, channel)
}

export function pongMessage (id?: MessageId): string {
  return serialize({ type: 'pong', id })
}

export function errorMessage (code: ErrorCode, message: string, id?: MessageId): string {
  return serialize({ type: 'error', id, data: { code, message } })
}
