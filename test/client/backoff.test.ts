import t from 'tap'
import { backoffCeiling, backoffDelay, restartDelay } from '../../client/index.js'

t.test('the ceiling doubles from 500 ms and stops at 30 s', async (t) => {
  t.same([0, 1, 2, 3, 4, 5, 6, 7, 8, 20].map(a => backoffCeiling(a)), [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000])
})

t.test('full jitter: uniform in [0, ceiling)', async (t) => {
  t.equal(backoffDelay(3, {}, () => 0), 0)
  t.equal(backoffDelay(3, {}, () => 0.5), 2000)
  t.equal(backoffDelay(3, {}, () => 0.999999), 3999)
  t.equal(backoffDelay(50, {}, () => 0.999999), 29999, 'never above the cap')
  const seen = Array.from({ length: 200 }, () => backoffDelay(2))
  t.ok(seen.every(d => d >= 0 && d < 2000 && Number.isInteger(d)))
  t.ok(new Set(seen).size > 50, 'spread out, not one value')
})

t.test('options change start, cap and growth', async (t) => {
  const opts = { initial: 100, max: 1000, factor: 3 }
  t.same([0, 1, 2, 3].map(a => backoffCeiling(a, opts)), [100, 300, 900, 1000])
  t.equal(backoffDelay(1, opts, () => 0.5), 150)
})

t.test('a restart (1012) spreads clients over the restart window', async (t) => {
  t.equal(restartDelay({}, () => 0.5), 2500)
  t.equal(restartDelay({ restartWindow: 1000 }, () => 0.999), 999)
})
