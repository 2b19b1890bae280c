import t from 'tap'
import { build, testDatabase, waitFor } from '../helper.js'
import { tcpProxyFor } from '../fixtures/proxy.js'

/** How long the network stays slow: the fault itself, not a wait for something to happen. */
const slowFor = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

t.test('/health is always ok; /ready follows the database within about a second', async (t) => {
  const { app, db } = await build(t)
  t.same((await app.inject('/health')).json(), { status: 'ok' })
  await waitFor(() => app.citasLive.live.status().changeCapture.role === 'leader')
  const ready = await app.inject('/ready')
  t.equal(ready.statusCode, 200)
  t.match(ready.json(), { status: 'ready', bus: { kind: 'postgres', up: true }, change_capture: { mode: 'table', role: 'leader', stalled: false } })
  t.notOk('reasons' in ready.json(), 'ready says no reasons')

  await db.setDown(true)
  let down = await app.inject('/ready')
  await waitFor(async () => { down = await app.inject('/ready'); return down.statusCode === 503 }, 10_000)
  t.match(down.json(), { status: 'unavailable', code: 'unavailable', message: 'database unreachable' })
  t.equal((await app.inject('/health')).statusCode, 200, 'alive even when the database is not')

  await db.setDown(false)
  await waitFor(async () => (await app.inject('/ready')).statusCode === 200, 10_000)
})

t.test('right after boot, /ready waits for the first probe instead of answering that nothing was checked yet', async (t) => {
  const db = await testDatabase(t)
  const proxy = await tcpProxyFor(db.url)
  t.teardown(() => proxy.close())
  // A first connection slower than a probe's usual wait (a busy machine, a far database); the
  // session goes straight to the database, so the boot itself does not wait.
  proxy.hold()
  const { app } = await build(t, { database: db, db: { connectionString: proxy.through(db.url) }, live: { session: db.url } })
  const first = app.inject('/ready')
  let answered = false
  void first.then(() => { answered = true })
  await waitFor(() => proxy.sent().length > 0) // the probe's connection is on its way
  await slowFor(300)
  t.notOk(answered, 'no answer while the first probe is still on its way')
  proxy.release()
  const reply = await first
  t.equal(reply.statusCode, 200)
  t.match(reply.json(), { status: 'ready' })
})

t.test('/ready is cheap: a burst of probes costs about one query a second', async (t) => {
  const db = await testDatabase(t)
  const proxy = await tcpProxyFor(db.url)
  t.teardown(() => proxy.close())
  const { app } = await build(t, { database: db, db: { connectionString: proxy.through(db.url) } })
  const count = (): number => proxy.sent().split('SELECT 1').length - 1
  t.equal((await app.inject('/ready')).statusCode, 200)
  const before = count()
  const started = Date.now()
  let answered = 0
  while (answered < 50_000 && Date.now() - started < 2500) {
    const replies = await Promise.all(Array.from({ length: 100 }, async () => await app.inject('/ready')))
    for (const r of replies) if (r.statusCode === 200) answered++
  }
  const seconds = (Date.now() - started) / 1000
  t.ok(answered >= 100, `${answered} probes answered ready`)
  t.ok(count() - before >= 1, 'the state is refreshed while probes keep coming')
  t.ok(count() - before <= Math.ceil(seconds) + 1, `${count() - before} probe queries for ${answered} probes in ${seconds.toFixed(1)} s`)
})

t.test('/ready answers at once when the database hangs, and says so within a few seconds', async (t) => {
  const db = await testDatabase(t)
  const proxy = await tcpProxyFor(db.url)
  t.teardown(() => proxy.close())
  // A query that hangs is given up only after a minute: a probe that waited for the database
  // would not answer within this test's waits at all.
  const { app } = await build(t, { database: db, db: { connectionString: proxy.through(db.url), statementTimeoutMs: 60_000 } })
  t.equal((await app.inject('/ready')).statusCode, 200)

  proxy.freeze()
  let answered = 0
  let last = await app.inject('/ready')
  await waitFor(async () => {
    last = await app.inject('/ready')
    answered++
    return last.statusCode === 503
  }, 15_000)
  t.match(last.json(), { status: 'unavailable', code: 'unavailable', message: 'database not answering' })
  t.ok(answered >= 2, `probes kept answering while the database hung (${answered} until it was declared not answering)`)
  t.equal((await app.inject('/health')).statusCode, 200)

  proxy.cut()
  proxy.thaw()
  await waitFor(async () => (await app.inject('/ready')).statusCode === 200, 20_000)
  t.pass('ready again once the database answers')
})
