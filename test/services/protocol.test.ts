import t from 'tap'
import { parseClientMessage, negocioOf, channelFor } from '../../services/live/messages.js'

t.test('channels', async (t) => {
  t.equal(negocioOf('estadisticas:abc_1-2'), 'abc_1-2')
  t.equal(negocioOf(channelFor('x')), 'x')
  t.equal(negocioOf('estadisticas:'), null)
  t.equal(negocioOf('estadisticas:a b'), null)
  t.equal(negocioOf('otro:abc'), null)
  t.equal(negocioOf('estadisticas:' + 'a'.repeat(65)), null)
  t.equal(negocioOf('estadisticas:' + 'a'.repeat(64)), 'a'.repeat(64))
})

t.test('valid messages', async (t) => {
  t.same(parseClientMessage('{"type":"ping"}'), { ok: true, message: { type: 'ping' } })
  t.same(parseClientMessage('{"type":"ping","id":"x1"}'), { ok: true, message: { type: 'ping', id: 'x1' } })
  t.same(parseClientMessage('{"type":"subscribe","id":7,"data":{"channel":"estadisticas:n1"}}'),
    { ok: true, message: { type: 'subscribe', channel: 'estadisticas:n1', id: 7 } })
  t.same(parseClientMessage('{"type":"unsubscribe","data":{"channel":"estadisticas:n1","extra":1}}'),
    { ok: true, message: { type: 'unsubscribe', channel: 'estadisticas:n1' } })
})

t.test('bad messages never throw and say why', async (t) => {
  const cases: Array<[string, string, RegExp]> = [
    ['not json', 'bad_request', /not valid JSON/],
    ['[]', 'bad_request', /JSON object/],
    ['null', 'bad_request', /JSON object/],
    ['"ping"', 'bad_request', /JSON object/],
    ['{}', 'bad_request', /type must be a string/],
    ['{"type":5}', 'bad_request', /type must be a string/],
    ['{"type":"dance"}', 'bad_request', /unknown message type "dance"/],
    ['{"type":"subscribe"}', 'bad_request', /needs data/],
    ['{"type":"subscribe","data":[]}', 'bad_request', /needs data/],
    ['{"type":"subscribe","data":{"channel":5}}', 'bad_request', /channel must be a string/],
    ['{"type":"subscribe","data":{"channel":"foo"}}', 'invalid_channel', /estadisticas:<negocio_id>/],
    ['{"type":"unsubscribe","data":{"channel":"estadisticas:../x"}}', 'invalid_channel', /estadisticas/],
    ['{"type":"ping","id":{"a":1}}', 'bad_request', /id must be/],
    ['{"__proto__":{"type":"ping"}}', 'bad_request', /type must be a string/]
  ]
  for (const [raw, code, message] of cases) {
    const r = parseClientMessage(raw)
    t.equal(r.ok, false, raw)
    if (!r.ok) {
      t.equal(r.code, code, raw)
      t.match(r.message, message, raw)
    }
  }
  const withId = parseClientMessage('{"type":"subscribe","id":"q","data":{"channel":"nope"}}')
  t.same(withId, { ok: false, code: 'invalid_channel', message: withId.ok ? '' : withId.message, id: 'q' })
})
