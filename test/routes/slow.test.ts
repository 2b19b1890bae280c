import t, { type Test } from 'tap'
import { addNegocio, build, Client, listen, sign, waitFor } from '../helper.js'

// Large payloads get past the kernel's socket buffers quickly, so the hub's own bound is what holds.
const BIG = 64 * 1024
function payload (n: number): string {
  return JSON.stringify({ type: 'stats', data: { negocio_id: 'n1', seq: n, pad: 'x'.repeat(BIG) } })
}

t.test('a paused client: the send buffer stays bounded, and on resume it gets the newest payload last', async (t) => {
  const { app, db } = await build(t, { hub: { maxBufferedBytes: 128 * 1024, stallTimeoutMs: 60_000 } })
  const { ws } = await listen(app)
  await addNegocio(db.pool, 'n1')
  const slow = await Client.open(`${ws}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
  const fast = await Client.open(`${ws}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
  await slow.subscribe('n1')
  await fast.subscribe('n1')
  slow.ws.pause()
  const [, fastConn] = [...app.citasLive.hub.connections]
  let maxBuffered = 0
  const N = 400 // 400 x 64 KiB = 25 MiB, far more than the kernel holds for one socket
  for (let i = 1; i <= N; i++) {
    // Pace on the reading client so it is never over the bound itself (it would get newest-only too).
    await waitFor(() => fastConn?.bufferedAmount === 0, 10_000)
    app.citasLive.hub.publish('estadisticas:n1', payload(i))
    for (const c of app.citasLive.hub.connections) maxBuffered = Math.max(maxBuffered, c.bufferedAmount)
  }
  t.ok(maxBuffered <= 128 * 1024 + 2 * (BIG + 200), `bufferedAmount peaked at ${maxBuffered} bytes (bound 131072 + one frame)`)
  t.ok(app.citasLive.hub.counters.dropped.superseded > 0, `stale payloads were dropped (${app.citasLive.hub.counters.dropped.superseded})`)
  await waitFor(() => fast.received.filter(m => m.type === 'stats').length >= N + 1, 20_000)
  t.equal(fast.received.at(-1)?.data.seq, N, 'the fast client got everything, in order')

  slow.ws.resume()
  await waitFor(() => slow.received.at(-1)?.data?.seq === N, 20_000)
  const seqs = slow.received.filter(m => m.data?.seq !== undefined).map(m => m.data.seq as number)
  t.ok(seqs.length < N, `the slow client got ${seqs.length} of ${N} payloads: older ones dropped, not queued`)
  t.same(seqs, [...seqs].sort((a, b) => a - b), 'in order')
  t.equal(seqs.at(-1), N, 'the newest last')
})

/** A server with a 64 KiB bound and a 300 ms stall deadline, and a subscriber that stopped reading, pushed over the bound. */
async function stalledClient (t: Test) {
  const { app, db } = await build(t, { hub: { maxBufferedBytes: 64 * 1024, stallTimeoutMs: 300 } })
  const { ws } = await listen(app)
  await addNegocio(db.pool, 'n1')
  const c = await Client.open(`${ws}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
  await c.subscribe('n1')
  c.ws.pause()
  for (let i = 0; i < 200 && app.citasLive.hub.slowCount === 0; i++) {
    app.citasLive.hub.publish('estadisticas:n1', payload(i))
    await new Promise(resolve => setImmediate(resolve))
  }
  return { app, c }
}

t.test('a client stalled past the deadline is closed with 1013', async (t) => {
  const { app, c } = await stalledClient(t)
  t.equal(app.citasLive.hub.slowCount, 1, 'over the bound')
  await waitFor(() => app.citasLive.hub.stalledCount === 1)
  c.ws.resume()
  t.same(await c.closed, { code: 1013, reason: 'too slow to read updates' })
})

t.test('a stalled client that never reads its 1013 close is cut within a few seconds', async (t) => {
  const { app } = await stalledClient(t) // never resumed: the close frame stays behind what it does not read
  const [conn] = [...app.citasLive.hub.connections]
  await waitFor(() => app.citasLive.hub.stalledCount === 1, 5000)
  // ws alone waits 30 s for the peer's close frame; the hub cuts it after a 2 s grace.
  await waitFor(() => conn?.open === false && app.citasLive.hub.connections.size === 0, 10_000)
  t.pass('the server side is closed')
  t.equal(app.citasLive.hub.connections.size, 0, 'and the hub forgot it')
})
