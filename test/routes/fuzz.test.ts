import t from 'tap'
import fc from 'fast-check'
import { addNegocio, build, Client, listen, serviceToken, sign, type Message } from '../helper.js'
import { parseClientMessage } from '../../services/live/messages.js'

// Fuzzing through the real server: random frames over a WebSocket and random /notify/cita bodies.
// Together with test/services/fuzz.test.ts (11,000 parser cases) this is well over 10,000 cases.

const frame = fc.oneof(
  fc.json({ depthSize: 'medium' }),
  fc.string({ unit: 'grapheme', maxLength: 300 }),
  fc.record({ type: fc.constantFrom('ping', 'subscribe', 'unsubscribe', 'refresh', 'nope'), id: fc.oneof(fc.string({ maxLength: 80 }), fc.integer()), data: fc.oneof(fc.record({ channel: fc.oneof(fc.constant('estadisticas:n1'), fc.string()) }), fc.record({ token: fc.string() }), fc.jsonValue()) }).map(v => JSON.stringify(v)),
  fc.integer({ min: 1, max: 680 }).map(n => '{"x":'.repeat(n) + '1' + '}'.repeat(n)),
  fc.constantFrom('{"__proto__":{"polluted":1},"type":"ping"}', '{"constructor":{"prototype":{"polluted":1}},"type":"ping"}', '{"type":"ping","id":1e999}', `{"type":"ping","id":${'9'.repeat(400)}}`)
)

t.test('random frames over a real socket: the promised reply for each, the socket stays up', async (t) => {
  const { app, db } = await build(t, { limits: { messageRate: 1_000_000, messageBurst: 1_000_000 } })
  const { ws } = await listen(app)
  await addNegocio(db.pool, 'n1')
  const c = await Client.open(`${ws}/ws?token=${sign({ sub: 'u', negocio_id: 'n1' })}`, t)
  // Frames over the 4 KiB bound close the socket with 1009 (tested in limits.test.ts): keep under it here.
  const frames = fc.sample(frame.filter(f => Buffer.byteLength(f) <= 4096), 400)
  let marker = 0
  for (const f of frames) {
    c.send(f)
    c.send({ type: 'ping', id: `m${++marker}` })
    const replies: Message[] = []
    for (;;) {
      const m = await c.next()
      if (m.type === 'pong' && m.id === `m${marker}`) break
      // A valid subscribe's snapshot arrives on its own schedule, possibly after a later frame's reply.
      if (m.type !== 'stats') replies.push(m)
    }
    const parsed = parseClientMessage(f)
    if (!parsed.ok) {
      t.same(replies, [{ type: 'error', ...(parsed.id !== undefined ? { id: parsed.id } : {}), data: { code: parsed.code, message: parsed.message } }]) || t.comment(f.slice(0, 200))
    } else {
      t.notOk(replies.some(m => m.type === 'error' && m.data?.code === 'internal'), 'no internal error') || t.comment(f.slice(0, 200))
    }
  }
  t.equal(({} as Record<string, unknown>).polluted, undefined, 'no prototype pollution')

  c.ws.send(Buffer.from([0, 1, 2, 255]), { binary: true })
  t.same(await c.next(), { type: 'error', data: { code: 'bad_request', message: 'binary frames are not supported: send JSON text frames' } })
  t.same(await c.request({ type: 'ping' }), { type: 'pong' }, 'still open after a binary frame')
  c.ws.send(Buffer.from([0x7b, 0xc3, 0x28, 0x7d]), { binary: false }) // invalid UTF-8 in a text frame
  t.equal((await c.closed).code, 1007, 'invalid UTF-8: closed with 1007 as RFC 6455 requires')

  const d = await Client.open(`${ws}/ws?token=${sign({ sub: 'u', negocio_id: 'n1' })}`, t)
  t.same(await d.request({ type: 'ping' }), { type: 'pong' }, 'the server is fine')
})

t.test('random /notify/cita bodies: 200, 400, 404, 413 or 415 with a JSON error, never a 500', async (t) => {
  const { app, db } = await build(t, { limits: { notifyMax: 0 } })
  await addNegocio(db.pool, 'n1')
  const token = serviceToken()
  const body = fc.oneof(
    { arbitrary: fc.jsonValue().map(v => JSON.stringify(v)), weight: 3 },
    { arbitrary: fc.record({ negocio_id: fc.oneof(fc.constant('n1'), fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/), fc.string(), fc.integer()), action: fc.oneof(fc.constantFrom('created', 'updated', 'deleted', 'status_changed'), fc.string()) }, { requiredKeys: [] }).map(v => JSON.stringify(v)), weight: 3 },
    { arbitrary: fc.string({ unit: 'binary', maxLength: 200 }), weight: 1 },
    { arbitrary: fc.constantFrom('{"__proto__":{"polluted":1},"negocio_id":"n1","action":"created"}', '{"constructor":{"prototype":{"polluted":1}},"negocio_id":"n1","action":"created"}'), weight: 1 },
    { arbitrary: fc.integer({ min: 1, max: 3000 }).map(n => '['.repeat(n) + ']'.repeat(n)), weight: 1 }
  )
  const contentType = fc.constantFrom('application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded')
  let cases = 0
  await fc.assert(fc.asyncProperty(body, contentType, async (payload, type) => {
    cases++
    const res = await app.inject({ method: 'POST', url: '/notify/cita', headers: { authorization: `Bearer ${token}`, 'content-type': type }, payload })
    if (![200, 400, 404, 413, 415].includes(res.statusCode)) return false
    const json = res.json()
    if (res.statusCode === 200) return json.ok === true && json.negocio_id === 'n1'
    if (typeof json.code !== 'string' || typeof json.message !== 'string') return false
    if (payload.includes('"__proto__"') && payload.startsWith('{"__proto__"') && type.startsWith('application/json')) return res.statusCode === 400
    return true
  }), { numRuns: 1500 })
  t.equal(cases, 1500)
  t.equal(({} as Record<string, unknown>).polluted, undefined, 'no prototype pollution')
})
