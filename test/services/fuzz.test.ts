import t from 'tap'
import fc from 'fast-check'
import { parseClientMessage, replyMessage, type ParseResult } from '../../services/live/messages.js'

// Property tests of the client message parser: whatever arrives, it returns (never throws) and the
// answer is the one the protocol promises. 11,000 cases in all; seeds are random each run and a
// failure prints the seed and the shrunk counterexample.

const codes = new Set(['bad_request', 'invalid_channel'])

function parse (raw: string): ParseResult {
  const before = Object.keys(Object.prototype).length
  const result = parseClientMessage(raw)
  if (Object.keys(Object.prototype).length !== before || ({} as Record<string, unknown>).polluted !== undefined) {
    throw new Error('Object.prototype was modified')
  }
  return result
}

const negocioId = fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/)
const badNegocioId = fc.oneof(fc.constant(''), fc.string({ minLength: 65, maxLength: 80 }), fc.string().filter(s => !/^[A-Za-z0-9_-]{1,64}$/.test(s)))
const messageId = fc.oneof(fc.string({ maxLength: 64 }), fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }))
const badMessageId = fc.oneof(fc.string({ minLength: 65, maxLength: 100 }), fc.constant(null), fc.boolean(), fc.array(fc.integer()), fc.object())
const hostileKey = fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf')

function deep (depth: number, leaf: string): string {
  return '{"a":'.repeat(depth) + leaf + '}'.repeat(depth)
}

t.test('any string: returns a result, never throws; errors have a known code', async (t) => {
  fc.assert(fc.property(fc.oneof(
    fc.string({ unit: 'grapheme', maxLength: 200 }),
    fc.string({ unit: 'binary', maxLength: 200 }),
    fc.json({ depthSize: 'large' }),
    fc.integer({ min: 1, max: 4000 }).map(n => '['.repeat(n)),
    fc.integer({ min: 1, max: 1000 }).map(n => deep(n, '{"type":"ping"}'))
  ), (raw) => {
    const r = parse(raw)
    return r.ok || codes.has(r.code)
  }), { numRuns: 4000 })
  t.pass('4000 strings')
})

t.test('JSON that is not an object: bad_request "message must be a JSON object"', async (t) => {
  fc.assert(fc.property(fc.jsonValue().filter(v => typeof v !== 'object' || v === null || Array.isArray(v)), (v) => {
    const r = parse(JSON.stringify(v))
    return !r.ok && r.code === 'bad_request' && r.message === 'message must be a JSON object'
  }), { numRuns: 1000 })
  t.pass('1000 non-objects')
})

type Model =
  | { kind: 'ping', id?: unknown }
  | { kind: 'sub', type: 'subscribe' | 'unsubscribe', id?: unknown, channel: unknown }
  | { kind: 'refresh', id?: unknown, token: unknown }
  | { kind: 'unknown', id?: unknown, type: unknown }

const withOptionalId = <T extends object>(arb: fc.Arbitrary<T>) => fc.tuple(arb, fc.option(fc.oneof(messageId, badMessageId), { nil: undefined }))
  .map(([m, id]) => (id === undefined ? m : { ...m, id }))

const model: fc.Arbitrary<Model> = fc.oneof(
  withOptionalId(fc.constant({ kind: 'ping' as const })),
  withOptionalId(fc.record({
    kind: fc.constant('sub' as const),
    type: fc.constantFrom('subscribe' as const, 'unsubscribe' as const),
    channel: fc.oneof(negocioId.map(id => `estadisticas:${id}`), badNegocioId.map(id => `estadisticas:${id}`), fc.string(), fc.integer(), fc.constant(null))
  })),
  withOptionalId(fc.record({ kind: fc.constant('refresh' as const), token: fc.oneof(fc.string(), fc.integer(), fc.constant(null)) })),
  withOptionalId(fc.record({ kind: fc.constant('unknown' as const), type: fc.oneof(fc.string().filter(s => !['ping', 'subscribe', 'unsubscribe', 'refresh'].includes(s)), fc.integer(), fc.constant(null), fc.string({ minLength: 1000, maxLength: 3000 })) }))
)

function validId (id: unknown): boolean {
  return (typeof id === 'string' && id.length <= 64) || (typeof id === 'number' && Number.isFinite(id))
}

/** What the parser must answer for a message built from the model. */
function expected (m: Model): { ok: boolean, code?: string } {
  if ('id' in m && !validId(m.id)) return { ok: false, code: 'bad_request' }
  switch (m.kind) {
    case 'ping': return { ok: true }
    case 'refresh': return typeof m.token === 'string' && m.token !== '' ? { ok: true } : { ok: false, code: 'bad_request' }
    case 'unknown': return { ok: false, code: 'bad_request' }
    case 'sub':
      if (typeof m.channel !== 'string') return { ok: false, code: 'bad_request' }
      return /^estadisticas:[A-Za-z0-9_-]{1,64}$/.test(m.channel) ? { ok: true } : { ok: false, code: 'invalid_channel' }
  }
}

function wire (m: Model): Record<string, unknown> {
  const base: Record<string, unknown> = 'id' in m ? { id: m.id } : {}
  switch (m.kind) {
    case 'ping': return { ...base, type: 'ping' }
    case 'refresh': return { ...base, type: 'refresh', data: { token: m.token } }
    case 'unknown': return { ...base, type: m.type }
    case 'sub': return { ...base, type: m.type, data: { channel: m.channel } }
  }
}

t.test('messages from a model: the parser gives exactly the promised answer, echoing a valid id', async (t) => {
  fc.assert(fc.property(model, fc.array(fc.tuple(hostileKey, fc.jsonValue()), { maxLength: 3 }), (m, extra) => {
    const obj = wire(m)
    let raw = JSON.stringify(obj)
    // Extra hostile keys at the top level and inside data, written as JSON text so __proto__ is a real own key.
    for (const [k, v] of extra) raw = `{${JSON.stringify(k)}:${JSON.stringify(v)},${raw.slice(1)}`
    const r = parse(raw)
    const want = expected(m)
    if (r.ok !== want.ok) return false
    if (!r.ok && r.code !== want.code) return false
    if (r.ok && 'id' in m && r.message.id !== m.id) return false
    if (!r.ok && 'id' in m && validId(m.id) && r.id !== m.id) return false
    return true
  }), { numRuns: 5000 })
  t.pass('5000 modelled messages')
})

t.test('__proto__ and constructor payloads neither pollute nor change the outcome', async (t) => {
  fc.assert(fc.property(hostileKey, fc.jsonValue(), negocioId, (key, value, id) => {
    const raw = `{"type":"subscribe",${JSON.stringify(key)}:${JSON.stringify(value)},"data":{${JSON.stringify(key)}:{"polluted":1},"channel":"estadisticas:${id}"}}`
    const r = parse(raw)
    return r.ok && r.message.type === 'subscribe' && r.message.channel === `estadisticas:${id}`
  }), { numRuns: 1000 })
  t.equal(({} as Record<string, unknown>).polluted, undefined)
})

t.test('the reply to any accepted subscribe or unsubscribe is the JSON of its fields', async (t) => {
  fc.assert(fc.property(fc.constantFrom('subscribe', 'unsubscribe'), negocioId, fc.option(messageId, { nil: undefined }), (type, negocio, id) => {
    const frame = id === undefined
      ? { type, data: { channel: `estadisticas:${negocio}` } }
      : { type, id, data: { channel: `estadisticas:${negocio}` } }
    const parsed = parseClientMessage(JSON.stringify(frame))
    if (!parsed.ok || (parsed.message.type !== 'subscribe' && parsed.message.type !== 'unsubscribe')) return false
    const replyType = type === 'subscribe' ? 'subscribed' : 'unsubscribed'
    const reply = replyMessage(replyType, parsed.message.channel, parsed.message.id)
    const expected = id === undefined
      ? { type: replyType, data: { channel: frame.data.channel } }
      : { type: replyType, id, data: { channel: frame.data.channel } }
    return reply === JSON.stringify(expected)
  }), { numRuns: 2000 })
  t.pass('2,000 replies equal to JSON.stringify of the same fields')
})
