import t from 'tap'
import { reconnectDelay, RECONNECT_MAX_MS, RECONNECT_MIN_MS } from '../../services/bus/reconnect.js'

// The database session and the Redis bus come back with this backoff: after a long outage an
// instance is back on the bus within about a second of the server, not after a long wait.

t.test('the ceiling doubles from 100 ms and stops at 1 s, however many attempts failed', async (t) => {
  t.equal(RECONNECT_MIN_MS, 100)
  t.equal(RECONNECT_MAX_MS, 1000)
  const top = (attempt: number): number => reconnectDelay(attempt, {}, () => 1)
  t.same([0, 1, 2, 3, 4, 5].map(top), [100, 200, 400, 800, 1000, 1000])
  for (const attempt of [10, 31, 1000, Number.MAX_SAFE_INTEGER]) t.equal(top(attempt), 1000, `attempt ${attempt}`)
})

t.test('full jitter between the least wait and the ceiling', async (t) => {
  const delays = Array.from({ length: 200 }, (_, i) => reconnectDelay(8, {}, () => i / 200))
  t.ok(delays.every(d => d >= 100 && d <= 1000), 'within [100, 1000]')
  t.equal(new Set(delays).size, 200, 'spread out')
  t.equal(reconnectDelay(0, {}, Math.random), 100, 'the first retry waits the least')
})

t.test('the session\'s options move both bounds', async (t) => {
  t.equal(reconnectDelay(20, { minMs: 10, maxMs: 50 }, () => 1), 50)
  t.equal(reconnectDelay(20, { minMs: 10, maxMs: 50 }, () => 0), 10)
  t.equal(reconnectDelay(3, { minMs: 200, maxMs: 100 }, () => 1), 200, 'a maximum below the minimum is the minimum')
})
