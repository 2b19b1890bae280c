import t from 'tap'
import { build, testDatabase, waitFor } from '../helper.js'
import { tcpProxyFor } from '../fixtures/proxy.js'

t.test('/health is always ok; /ready follows the database within about a second', async (t) => {
  const { app, db } = await build(t)
  t.same((await app.inject('/health')).json(), { status: 'ok' })
  await waitFor(() => app.citasLive.live.status().changeCapture.role === 'leader')
  const ready = await app.inject('/ready')
  t.equal(ready.statusCode, 200)
  t.same(ready.json(), { status: 'ready', bus: { kind: 'postgres', up: true }, change_capture: { mode: 'table', role: 'leader' } })

  await db.setDown(true)
  let down = await app.inject('/ready')
  await waitFor(async () => { down = await app.inject('/ready'); return down.statusCode === 503 }, 10_000)
  t.match(down.json(), { status: 'unavailable', code: 'unavailable', message: 'database unreachable' })
  t.equal((await app.inject('/health')).statusCode, 200, 'alive even when the database is not')

  await db.setDown(false)
  await waitFor(async () => (await app.inject('/ready')).statusCode === 200, 10_000)
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
  const { app } = await build(t, { database: db, db: { connectionString: proxy.through(db.url) } })
  t.equal((await app.inject('/ready')).statusCode, 200)

  proxy.freeze()
  let slowest = 0
  let last = await app.inject('/ready')
  await waitFor(async () => {
    const started = Date.now()
    last = await app.inject('/ready')
    slowest = Math.max(slowest, Date.now() - started)
    return last.statusCode === 503
  }, 15_000)
  t.match(last.json(), { status: 'unavailable', code: 'unavailable', message: 'database not answering' })
  // Generous bound for a busy machine; before, a probe waited for the database (5 s and more).
  t.ok(slowest < 1000, `every probe answered without waiting for the database (slowest ${slowest} ms)`)
  t.equal((await app.inject('/health')).statusCode, 200)

  proxy.cut()
  proxy.thaw()
  await waitFor(async () => (await app.inject('/ready')).statusCode === 200, 20_000)
  t.pass('ready again once the database answers')
})
