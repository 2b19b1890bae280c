import t from 'tap'
import { createCoalescer } from '../../services/live/coalescer.js'
import { waitFor } from '../helper.js'

const tick = (ms = 0) => new Promise(resolve => setTimeout(resolve, ms))

function harness (gapMs = 0) {
  let state = 0
  const started: number[] = []
  const startedAt: number[] = []
  let inflight = 0
  let maxInflight = 0
  const c = createCoalescer<string, { tag: string[] }, number>(async (_key, opts) => {
    inflight++
    maxInflight = Math.max(maxInflight, inflight)
    const seen = state
    started.push(seen)
    startedAt.push(Date.now())
    await tick(20)
    inflight--
    if (opts.tag.includes('fail')) throw new Error('boom')
    return seen
  }, { gapMs, merge: (a, b) => ({ tag: [...a.tag, ...b.tag] }) })
  return { c, started, startedAt, set: (v: number) => { state = v }, get maxInflight () { return maxInflight } }
}

t.test('every request gets a run that started after it; one in flight; one queued', async (t) => {
  const h = harness()
  h.set(1)
  const first = h.c.request('k', { tag: [] })
  t.same(h.started, [1], 'the run starts at once and is in flight (it awaits a 20 ms timer)')
  // Three requests while the first run is in flight: they share exactly one more run.
  h.set(2)
  const a = h.c.request('k', { tag: [] })
  h.set(3)
  const b = h.c.request('k', { tag: [] })
  const c = h.c.request('k', { tag: [] })
  t.equal(await first, 1)
  t.equal(await a, 3, 'the queued run sees the last change made before it started')
  t.equal(await b, 3)
  t.equal(await c, 3)
  t.equal(h.c.runs, 2)
  t.equal(h.maxInflight, 1)
  t.equal(h.c.busy, 0, 'nothing left behind')
})

t.test('different keys run in parallel', async (t) => {
  const h = harness()
  await Promise.all([h.c.request('a', { tag: [] }), h.c.request('b', { tag: [] })])
  t.equal(h.maxInflight, 2)
})

t.test('a burst of 1,000 requests costs a handful of runs', async (t) => {
  const h = harness(50)
  const all: Array<Promise<number>> = []
  const t0 = Date.now()
  for (let i = 0; i < 1000; i++) {
    h.set(i)
    all.push(h.c.request('k', { tag: [] }))
    if (i % 100 === 0) await tick(10)
  }
  const burst = Date.now() - t0
  const results = await Promise.all(all)
  t.equal(results.at(-1), 999, 'the last request sees the final state')
  // The first run and the one queued behind it start at once; then at most one per 50 ms gap while
  // the burst lasts (about 100 ms, longer on a busy machine), plus the one queued at its end.
  t.ok(h.c.runs <= Math.floor(burst / 50) + 3, `runs: ${h.c.runs} for a burst of ${burst} ms`)
  t.ok(h.c.runs < 100, 'a handful, not one per request')
  t.equal(h.maxInflight, 1)
})

t.test('one request at a time is not held back by the gap; a key that runs twice within it waits it out', async (t) => {
  const h = harness(1000)
  await h.c.request('k', { tag: [] })
  const second = h.c.request('k', { tag: [] })
  t.equal(h.c.runs, 2, 'the second run within the gap starts at once: one change after another is not delayed')
  await second
  h.set(1)
  const third = h.c.request('k', { tag: [] })
  h.set(2)
  const shared = h.c.request('k', { tag: [] })
  t.equal(h.c.runs, 2, 'two runs within the gap made the key hot: the third waits')
  t.equal(await third, 2, 'and it sees every change made while it waited')
  t.equal(await shared, 2, 'requests made meanwhile share it')
  const [, secondAt, thirdAt] = h.startedAt as [number, number, number]
  t.ok(thirdAt - secondAt >= 950, `it started a gap after the previous start (${thirdAt - secondAt} ms)`)
  t.equal(h.c.runs, 3)
  // A gap with no request: the key is forgotten, and cold again.
  await waitFor(() => h.c.busy === 0, 5000)
  void h.c.request('k', { tag: [] })
  t.equal(h.c.runs, 4, 'a request after a quiet gap starts at once')
})

t.test('a key requested non-stop runs once per gap, each run with the latest state', async (t) => {
  const h = harness(100)
  const all: Array<Promise<number>> = []
  const t0 = Date.now()
  // Bounded: 60 requests 10 ms apart (more on a busy machine), as a negocio written non-stop.
  for (let i = 0; i < 60; i++) {
    h.set(i)
    all.push(h.c.request('k', { tag: [] }))
    await tick(10)
  }
  const results = await Promise.all(all)
  const elapsed = Date.now() - t0
  t.equal(results.at(-1), 59, 'the last request sees the last state')
  t.ok(h.c.runs <= Math.ceil(elapsed / 100) + 3, `${h.c.runs} runs in ${elapsed} ms: one per gap, not one per request`)
  const gaps = h.startedAt.slice(2).map((at, i) => at - (h.startedAt[i + 1] as number))
  t.ok(gaps.every((g) => g >= 95), `from the third on, runs start a gap apart (${gaps.join(', ')} ms)`)
})

t.test('options of shared requests are merged; errors reach every waiter', async (t) => {
  const h = harness()
  const first = h.c.request('k', { tag: [] })
  const x = h.c.request('k', { tag: ['x'] })
  const y = h.c.request('k', { tag: ['fail'] })
  await first
  await t.rejects(x, /boom/)
  await t.rejects(y, /boom/)
  t.equal(await h.c.request('k', { tag: [] }), 0, 'a failure does not stick')
})

t.test('join shares the run in flight instead of queueing one', async (t) => {
  const h = harness()
  const first = h.c.request('k', { tag: [] })
  const joined = h.c.join('k', { tag: [] })
  t.equal(await first, await joined)
  t.equal(h.c.runs, 1)
  await h.c.join('k', { tag: [] })
  t.equal(h.c.runs, 2, 'with nothing in flight, join starts a run')
})

t.test('maxBusyShare holds back a key whose requests keep overlapping its runs, not one that overlaps once', async (t) => {
  // The clock says every run took 1 s, so a busy key would wait 3 s before its next run.
  let clock = 0
  const starts: number[] = []
  const c = createCoalescer<string, object, number>(async () => {
    starts.push(Date.now())
    await tick(5)
    clock += 1000
    return starts.length
  }, { maxBusyShare: 0.25, merge: (a) => a, now: () => clock })
  const first = c.request('k', {})
  const overlapping = c.request('k', {})
  await first
  t.equal(await overlapping, 2, 'a request that overlapped one run gets the next run')
  t.ok((starts[1] ?? 0) - (starts[0] ?? 0) < 2000, 'and it was not held back for 3 s')
  t.equal(c.busy, 0, 'the key went idle (a slot settles before its waiters resume)')

  // Now a request queued behind every run: from the second in a row on, the wait applies.
  const a = c.request('k', {})
  const b = c.request('k', {})
  await a
  const d = c.request('k', {}) // queued behind b's run: b's run is the second in a row with one queued
  await b
  const waitedFrom = Date.now()
  t.equal(await d, 5)
  t.ok(Date.now() - waitedFrom >= 2900, `the busy key waited out three times its run (${Date.now() - waitedFrom} ms)`)
})
