import t from 'tap'
import { Connection, createHub, Prepared, type Access } from '../../services/live/hub.js'
import { fullBucket, takeToken } from '../../services/transports/token-bucket.js'
import { clientAddress, createConnectionCounter, createNetworkMatcher, createOriginCheck } from '../../services/http/limits.js'
import { sweepExpiry } from '../../services/live/expiry.js'
import { createDbMonitor, forEachLimited } from '../../services/live/db-monitor.js'
import { waitFor } from '../helper.js'

const access: Access = { all: true, negocios: new Set() }

/** A transport whose send buffer the test controls. */
class FakeConnection extends Connection {
  readonly transport = 'websocket' as const
  open = true
  bufferedAmount = 0
  sent: string[] = []
  closed: { code: number, reason: string } | null = null
  constructor (a: Access = access) { super(a) }
  send (message: Prepared | string): void { const text = typeof message === 'string' ? message : message.text; this.sent.push(text); this.bufferedAmount += text.length }
  close (code: number, reason: string): void { this.closed = { code, reason }; this.open = false }
  terminate (): void { this.open = false }
  heartbeat (): boolean { return true }
}

t.test('token bucket: burst, then the rate; refusals in a row are counted', async (t) => {
  let now = 0
  const bucket = fullBucket(3, now)
  const take = (): boolean => takeToken(bucket, 10, 3, now)
  t.same([take(), take(), take(), take()], [true, true, true, false])
  t.equal(bucket.refused, 1)
  t.equal(take(), false)
  t.equal(bucket.refused, 2)
  now += 100 // one token at 10/s
  t.equal(take(), true)
  t.equal(bucket.refused, 0)
  now += 60_000
  t.same([take(), take(), take(), take()], [true, true, true, false], 'never more than the burst')
})

t.test('connection counter: a limit per key, 0 is off', async (t) => {
  const c = createConnectionCounter(2)
  t.ok(c.acquire('a'))
  t.notOk(c.full('a'))
  t.ok(c.acquire('a'))
  t.ok(c.full('a'))
  t.notOk(c.acquire('a'))
  t.ok(c.acquire('b'))
  c.release('a')
  t.ok(c.acquire('a'))
  c.release('a'); c.release('a'); c.release('a')
  t.equal(c.count('a'), 0)
  const off = createConnectionCounter(0)
  let all = true
  for (let i = 0; i < 1000; i++) all &&= off.acquire('x')
  t.ok(all, 'never refuses')
  t.notOk(off.full('x'))
})

t.test('origin check: normalized exact matches; no list allows all; no header is not a browser', async (t) => {
  const check = createOriginCheck(['https://app.example.com', 'http://localhost:3000/'])
  t.ok(check('https://app.example.com'))
  t.ok(check('HTTPS://APP.EXAMPLE.COM:443'))
  t.ok(check('http://localhost:3000'))
  t.notOk(check('https://evil.example.com'))
  t.notOk(check('https://app.example.com.evil.com'))
  t.notOk(check('http://app.example.com'))
  t.notOk(check('null'))
  t.notOk(check(''))
  t.ok(check(undefined))
  t.ok(createOriginCheck(undefined)('https://anything.example'))
  t.throws(() => createOriginCheck(['app.example.com']), /not an http\(s\) origin/)
})

t.test('hub: a socket over the bound keeps only the newest payload per channel and gets it when it drains', async (t) => {
  let now = 0
  const hub = createHub({ maxBufferedBytes: 1024, stallTimeoutMs: 1000, now: () => now })
  t.teardown(hub.stop)
  const fast = hub.add(new FakeConnection())
  const slow = hub.add(new FakeConnection())
  const cf = fast
  const cs = slow
  for (const c of [cf, cs]) { hub.subscribe(c, 'a'); hub.subscribe(c, 'b') }

  slow.bufferedAmount = 5000 // the peer stopped reading
  for (let i = 0; i < 100; i++) {
    t.equal(hub.publish('a', `a${i}`), 2) || t.fail('publish')
    fast.bufferedAmount = 0 // the fast peer keeps up
  }
  hub.publish('b', 'b0')
  t.equal(fast.sent.length, 101, 'the fast socket gets everything')
  t.same(slow.sent, [], 'nothing more is written to the slow socket')
  t.equal(hub.slowCount, 1)
  t.equal(hub.counters.dropped.superseded, 99, 'superseded stats are dropped, not queued')

  slow.bufferedAmount = 0
  hub.flush()
  t.same(slow.sent, ['a99', 'b0'], 'on drain: the newest of each channel')
  t.equal(hub.slowCount, 0)
  hub.publish('a', 'a100')
  t.same(slow.sent.at(-1), 'a100', 'back on the fast path')

  hub.unsubscribe(cs, 'b')
  slow.bufferedAmount = 5000
  hub.publish('a', 'a101')
  hub.publish('b', 'b1')
  now += 999
  hub.flush()
  t.equal(slow.closed, null, 'not yet past the deadline')
  now += 1
  hub.flush()
  t.same(slow.closed, { code: 1013, reason: 'too slow to read updates' }, 'stalled past the deadline: 1013')
  t.equal(hub.stalledCount, 1)
  t.equal(hub.slowCount, 0)
})

t.test('hub: removing a slow connection forgets its held payloads', async (t) => {
  const hub = createHub({ maxBufferedBytes: 1024 })
  t.teardown(hub.stop)
  const c = hub.add(new FakeConnection())
  const s = c
  hub.subscribe(c, 'a')
  s.bufferedAmount = 4096
  hub.publish('a', 'x')
  t.equal(hub.slowCount, 1)
  hub.remove(c)
  t.equal(hub.slowCount, 0)
  t.equal(c.pending, null)
})

t.test('expiry sweep: one notice before exp, 4001 at exp, nothing for tokens without exp', async (t) => {
  const hub = createHub()
  const exp = 1_000_000
  const expiring = hub.add(new FakeConnection({ ...access, exp }))
  const forever = hub.add(new FakeConnection())
  const c = expiring
  sweepExpiry(hub.connections, exp * 1000 - 20_000, 10_000)
  t.same(expiring.sent, [], 'too early for a notice')
  sweepExpiry(hub.connections, exp * 1000 - 10_000, 10_000)
  sweepExpiry(hub.connections, exp * 1000 - 5_000, 10_000)
  t.same(expiring.sent.map(s => JSON.parse(s)), [{ type: 'token_expiring', data: { expires_at: exp } }], 'one notice')
  // A refresh to a later exp re-arms the notice.
  c.access = { ...access, exp: exp + 60 }
  sweepExpiry(hub.connections, exp * 1000, 10_000)
  t.equal(expiring.closed, null)
  t.equal(sweepExpiry(hub.connections, (exp + 60) * 1000, 10_000), 1)
  t.same(expiring.closed, { code: 4001, reason: 'token expired' })
  t.same(forever.sent, [])
  t.equal(forever.closed, null)
})

t.test('db monitor: one failure starts probing, recovery runs the listeners once, errors stay inside', async (t) => {
  let answers = false
  let probes = 0
  const errors: unknown[] = []
  const monitor = createDbMonitor({
    probe: async () => { probes++; if (!answers) throw new Error('down') },
    probeIntervalMs: 10,
    onError: (err) => errors.push(err)
  })
  t.teardown(monitor.stop)
  let ups = 0
  monitor.onUp(() => { ups++ })
  monitor.onUp(async () => { throw new Error('listener failed') })
  monitor.reportFailure(new Error('x'))
  monitor.reportFailure(new Error('y'))
  t.equal(monitor.isUp, false)
  t.equal(monitor.outageCount, 1, 'repeated failures are one outage')
  await waitFor(() => probes >= 2)
  t.pass('probes while down')
  t.equal(ups, 0)
  answers = true
  await waitFor(() => monitor.isUp && errors.length > 0)
  t.equal(ups, 1)
  t.match(errors, [{ message: 'listener failed' }])
  t.equal(monitor.isProbing, false, 'no probing while up: no probe scheduled or running')
  t.equal(ups, 1, 'the listeners ran once')
})

t.test('forEachLimited: bounded concurrency, every item, errors reported', async (t) => {
  let running = 0
  let peak = 0
  const done: number[] = []
  const failed: number[] = []
  await forEachLimited(Array.from({ length: 20 }, (_, i) => i), 3, async (i) => {
    running++
    peak = Math.max(peak, running)
    await new Promise(resolve => setTimeout(resolve, 2))
    running--
    if (i % 5 === 0) throw new Error('no')
    done.push(i)
  }, (_err, i) => failed.push(i))
  t.equal(peak, 3)
  t.equal(done.length + failed.length, 20)
  t.same(failed.sort((a, b) => a - b), [0, 5, 10, 15])
})

t.test('clientAddress: the socket, or what listed proxies say, never what a client wrote', async (t) => {
  const proxies = createNetworkMatcher(['10.0.0.0/24', '192.168.1.7'])
  const none = createNetworkMatcher([])
  t.equal(clientAddress('203.0.113.9', '10.1.2.3', none), '203.0.113.9', 'no proxies: the header is ignored')
  t.equal(clientAddress('203.0.113.9', '10.1.2.3', proxies), '203.0.113.9', 'a peer that is no proxy: ignored too')
  t.equal(clientAddress('10.0.0.5', '198.51.100.4', proxies), '198.51.100.4', 'one proxy: the address it added')
  t.equal(clientAddress('10.0.0.5', '10.1.2.3, 198.51.100.4', proxies), '198.51.100.4', 'what the client wrote sits left of it')
  t.equal(clientAddress('10.0.0.5', '198.51.100.4, 192.168.1.7', proxies), '198.51.100.4', 'two proxies: the rightmost address neither added')
  t.equal(clientAddress('10.0.0.5', ['1.1.1.1', '198.51.100.4'], proxies), '198.51.100.4', 'repeated headers read as one list')
  t.equal(clientAddress('10.0.0.5', 'not-an-ip', proxies), '10.0.0.5', 'garbage stops at the proxy that passed it on')
  t.equal(clientAddress('::ffff:10.0.0.5', '198.51.100.4', proxies), '198.51.100.4', 'an IPv4 proxy seen as IPv6')
  t.equal(clientAddress('10.0.0.5', '10.0.0.6', proxies), '10.0.0.6', 'only proxies: the furthest one')
  t.equal(clientAddress(undefined, '1.2.3.4', proxies), '', 'no peer address')
})
