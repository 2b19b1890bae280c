import t from 'tap'
import fc from 'fast-check'
import { EventStreamParser, type StreamEvent } from '../../client/index.js'

/** Parses `chunks` in order; returns the events, the retries and the comments seen. */
function parse (chunks: string[]): { events: StreamEvent[], retries: number[], comments: string[], lastEventId: string } {
  const events: StreamEvent[] = []
  const retries: number[] = []
  const comments: string[] = []
  const parser = new EventStreamParser({ onEvent: (e) => events.push(e), onRetry: (ms) => retries.push(ms), onComment: (c) => comments.push(c) })
  for (const chunk of chunks) parser.feed(chunk)
  return { events, retries, comments, lastEventId: parser.lastEventId }
}

t.test('the fields: event, id, data, retry; a blank line dispatches', async (t) => {
  const { events, retries } = parse(['retry: 2000\n\nevent: stats\nid: v1\ndata: {"a":1}\n\n'])
  t.same(events, [{ type: 'stats', data: '{"a":1}', lastEventId: 'v1' }])
  t.same(retries, [2000])
})

t.test('LF, CRLF and CR all end lines, also mixed in one stream', async (t) => {
  for (const eol of ['\n', '\r\n', '\r']) {
    const { events } = parse([`event: a${eol}data: 1${eol}${eol}data: 2${eol}${eol}`])
    t.same(events.map(e => [e.type, e.data]), [['a', '1'], ['message', '2']], JSON.stringify(eol))
  }
  t.same(parse(['data: x\r\ndata: y\rdata: z\n\r\n']).events.map(e => e.data), ['x\ny\nz'])
})

t.test('multi-line data is joined with LF; an empty data line counts', async (t) => {
  t.same(parse(['data: one\ndata: two\ndata\n\n']).events.map(e => e.data), ['one\ntwo\n'])
  t.same(parse(['data:\n\n']).events.map(e => e.data), [''], 'data: alone dispatches an empty string')
})

t.test('one leading space is removed from a value, not more; a colon-less line is a field with an empty value', async (t) => {
  t.same(parse(['data:  two spaces\n\n']).events.map(e => e.data), [' two spaces'])
  t.same(parse(['data:no space\n\n']).events.map(e => e.data), ['no space'])
  t.same(parse(['data: a: b\n\n']).events.map(e => e.data), ['a: b'], 'only the first colon splits')
})

t.test('comments are not events; unknown fields are ignored; an event without data is not dispatched', async (t) => {
  const { events, comments } = parse([': heartbeat\n:x\n\nfoo: bar\nevent: lonely\n\ndata: y\n\n'])
  t.same(comments, ['heartbeat', 'x'])
  t.same(events, [{ type: 'message', data: 'y', lastEventId: '' }], 'the event type of an event without data does not leak into the next')
})

t.test('ids persist across events until the next id; an id with NUL is ignored; an empty id resets', async (t) => {
  const { events, lastEventId } = parse(['id: 1\ndata: a\n\ndata: b\n\nid: 2\u00003\ndata: c\n\nid\ndata: d\n\n'])
  t.same(events.map(e => [e.data, e.lastEventId]), [['a', '1'], ['b', '1'], ['c', '1'], ['d', '']])
  t.equal(lastEventId, '')
  t.equal(parse(['id: 7\n\n']).lastEventId, '7', 'an id alone updates the last event id (WHATWG: set before the data check)')
})

t.test('retry needs ASCII digits only', async (t) => {
  t.same(parse(['retry: 10\nretry: 1.5\nretry: abc\nretry: -1\nretry:\nretry: 0\n\n']).retries, [10, 0])
})

t.test('a leading BOM is dropped once; an unfinished event at the end is not dispatched', async (t) => {
  t.same(parse(['\ufeffdata: a\n\n\ufeffdata: b\n\n']).events.map(e => e.data), ['a'], 'the second BOM makes an unknown field')
  t.same(parse(['data: a\n\ndata: b\n']).events.map(e => e.data), ['a'])
})

t.test('split anywhere, even between CR and LF, the stream parses the same', async (t) => {
  const text = '\ufeffretry: 5\r\n: hb\r\nevent: stats\r\nid: v1\r\ndata: {"x":"á€😀"}\r\ndata: 2\r\r\nid: v2\rdata: z\r\r\n\n'
  const whole = parse([text])
  t.equal(whole.events.length, 2)
  t.same(whole.events[0], { type: 'stats', data: '{"x":"á€😀"}\n2', lastEventId: 'v1' })
  for (let i = 0; i <= text.length; i++) {
    for (let j = i; j <= text.length; j += 3) {
      const split = parse([text.slice(0, i), text.slice(i, j), text.slice(j)])
      if (JSON.stringify(split) !== JSON.stringify(whole)) t.fail(`split at ${i}/${j}`)
    }
  }
  fc.assert(fc.property(fc.array(fc.nat(text.length), { maxLength: 8 }), (cuts) => {
    const points = [0, ...[...cuts].sort((a, b) => a - b), text.length]
    const chunks = points.slice(1).map((p, k) => text.slice(points[k], p))
    return JSON.stringify(parse(chunks)) === JSON.stringify(whole)
  }))
  t.pass('every split parses like the whole')
})
