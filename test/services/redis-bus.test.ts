import t from 'tap'
import { randomBytes } from 'node:crypto'
import { createRedisBus } from '../../services/bus/redis-bus.js'
import { createBusOutbox } from '../../services/bus/outbox.js'
import type { BusMessage } from '../../services/bus/codec.js'
import { tcpProxyFor } from '../fixtures/proxy.js'
import { waitFor } from '../helper.js'
import { NO_REDIS, redisUrl } from '../fixtures/own-servers.js'

// The Redis bus on the run's Redis, each test on a channel of its own. An instance that loses
// Redis is simulated with a proxy in front of it that refuses its connections: Redis itself, and
// the other instances' connections to it, never stop.

const snapshot = (negocioId: string, totalCitas: number): BusMessage => ({
  origin: 'publisher',
  snapshots: [{
    stats: { negocio_id: negocioId, citas_hoy: 0, total_citas: totalCitas, citas_completadas: 0, citas_canceladas: 0, timestamp: Math.floor(Date.now() / 1000) },
    dayEndsAt: Date.now() + 3_600_000,
    version: Date.now() * 1000
  }]
})

t.test('what an instance kept while Redis was unreachable reaches the others once Redis is back, however long it was away', { skip: NO_REDIS }, async (t) => {
  const REDIS_URL = await redisUrl(t)
  const proxy = await tcpProxyFor(REDIS_URL)
  const channel = `citas-live-test:redis-bus:${randomBytes(6).toString('hex')}`
  const received: Array<{ payload: string }> = []
  // The instance that loses Redis, wired as the live plugin wires it: an outbox keeps the stats it
  // could not send and sends them when the publisher connection is ready again.
  const publisher = createRedisBus({ url: proxy.through(REDIS_URL), channel, name: 'test-publisher', onMessage: () => {}, onError: () => {} })
  const outbox = createBusOutbox(async (m) => { await publisher.publish(JSON.stringify(m)) })
  publisher.onPublisherReady(() => { outbox.flush().catch(() => {}) })
  // Another instance, which keeps its subscription all along.
  const listener = createRedisBus({ url: REDIS_URL, channel, name: 'test-listener', onMessage: (payload) => received.push({ payload }), onError: () => {} })
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
  // Attempts keep coming while Redis refuses them (their pace: test/services/reconnect.test.ts).
  await waitFor(() => proxy.refused >= 6, 30_000)
  proxy.accept()

  await waitFor(() => received.length > 0 && publisher.up, 15_000)
  t.same(received.map(r => JSON.parse(r.payload)), [kept], 'exactly the kept stats, once')
  t.equal(outbox.pending, 0)
  t.equal(listener.reconnects, 0, 'the other instance kept its subscription all along')
})
