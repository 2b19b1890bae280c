import t from 'tap'
import { randomBytes } from 'node:crypto'
import { createRedisBus } from '../../services/redis-bus.js'
import { createBusOutbox } from '../../services/bus-outbox.js'
import type { BusMessage } from '../../services/live-stats.js'
import { tcpProxyFor } from '../fixtures/proxy.js'
import { waitFor } from '../helper.js'
import { NO_REDIS, redisUrl } from '../fixtures/own-servers.js'

// The Redis bus on the run's Redis, each test on a channel of its own. An instance that loses
// Redis is simulated with a proxy in front of it that refuses its connections: Redis itself, and
// the other instances' connections to it, never stop.

/** How long Redis stays unreachable: the outage being simulated, not a wait for something to happen. */
const outage = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

const snapshot = (negocioId: string, totalCitas: number): BusMessage => ({
  origin: 'publisher',
  snapshot: {
    stats: { negocio_id: negocioId, citas_hoy: 0, total_citas: totalCitas, citas_completadas: 0, citas_canceladas: 0, timestamp: Math.floor(Date.now() / 1000) },
    dayEndsAt: Date.now() + 3_600_000,
    version: Date.now() * 1000
  }
})

t.test('what an instance kept while Redis was unreachable reaches the others within about a second of Redis being back, however long it was away', { skip: NO_REDIS }, async (t) => {
  const REDIS_URL = await redisUrl(t)
  const proxy = await tcpProxyFor(REDIS_URL)
  const channel = `citas-live-test:redis-bus:${randomBytes(6).toString('hex')}`
  const received: Array<{ payload: string, at: number }> = []
  // The instance that loses Redis, wired as the live plugin wires it: an outbox keeps the stats it
  // could not send and sends them when the publisher connection is ready again.
  const publisher = createRedisBus({ url: proxy.through(REDIS_URL), channel, name: 'test-publisher', onMessage: () => {}, onError: () => {} })
  const outbox = createBusOutbox(async (m) => { await publisher.publish(JSON.stringify(m)) })
  publisher.onPublisherReady(() => { outbox.flush().catch(() => {}) })
  // Another instance, which keeps its subscription all along.
  const listener = createRedisBus({ url: REDIS_URL, channel, name: 'test-listener', onMessage: (payload) => received.push({ payload, at: Date.now() }), onError: () => {} })
  t.teardown(async () => {
    outbox.close()
    await publisher.close()
    await listener.close()
    await proxy.close()
  })
  publisher.start()
  listener.start()
  await waitFor(() => publisher.up && listener.up)

  proxy.refuse()
  proxy.cut()
  await waitFor(() => !publisher.up)
  const kept = snapshot('n1', 7)
  await t.rejects(outbox.publish(kept), 'Redis is unreachable: the publish fails fast')
  t.equal(outbox.pending, 1, 'and the stats are kept')
  // Four seconds away: each connection has been refused four times or more by then (four waits of
  // a backoff doubling from 200 ms add up to 3 s at most), so a backoff that kept doubling would
  // now wait 3.2 s or more before the next attempt.
  await outage(4000)
  // Redis is reachable again right after an attempt was refused: the worst moment.
  const seen = proxy.refused
  await waitFor(() => proxy.refused > seen, 10_000)
  proxy.accept()
  const backAt = Date.now()

  await waitFor(() => received.length > 0 && publisher.up, 15_000)
  const upAfter = Date.now() - backAt
  const arrivedAfter = (received[0]?.at ?? 0) - backAt
  t.ok(arrivedAfter < 2000, `the kept stats reached the other instance ${arrivedAfter} ms after Redis was reachable again (at most 2000)`)
  t.ok(upAfter < 2000, `the instance was on the bus again (subscribed, able to publish) within ${upAfter} ms (at most 2000)`)
  t.same(received.map(r => JSON.parse(r.payload)), [kept], 'exactly the kept stats, once')
  t.equal(outbox.pending, 0)
  t.equal(listener.reconnects, 0, 'the other instance kept its subscription all along')
})
