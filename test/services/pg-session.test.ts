import t from 'tap'
import { createPgSession } from '../../services/bus/pg-session.js'
import { tcpProxyFor } from '../fixtures/proxy.js'
import { testDatabase, waitFor } from '../helper.js'

// The dedicated session (LISTEN, change capture, leader lock) against a database that goes away
// for long. The database is a test database of the shared server behind a proxy that refuses
// connections: for the session, a server that is down. The server itself never stops.

t.test('through a long outage the session keeps trying, and is back (LISTEN included) once the database is', async (t) => {
  const db = await testDatabase(t)
  const proxy = await tcpProxyFor(db.url)
  const notified: string[] = []
  let connects = 0
  const session = createPgSession({
    connection: { connectionString: proxy.through(db.url) },
    channels: ['citas_live_test'],
    onNotification: (_channel, payload) => notified.push(payload),
    onConnect: () => { connects++ }
  })
  t.teardown(async () => {
    await session.close()
    await proxy.close()
  })
  await session.start()
  t.ok(session.connected)

  proxy.refuse()
  proxy.cut()
  await waitFor(() => !session.connected)
  // Attempts keep coming while the database refuses them (their pace: test/services/reconnect.test.ts).
  await waitFor(() => proxy.refused >= 5, 30_000)
  proxy.accept()
  await waitFor(() => session.connected, 15_000)
  t.equal(connects, 2)
  t.equal(session.reconnects, 1)
  await db.pool.query("SELECT pg_notify('citas_live_test', 'after the outage')")
  await waitFor(() => notified.length > 0)
  t.same(notified, ['after the outage'], 'and it LISTENs again')
})

t.test('queries given together run one at a time, in order, each with its own deadline, and pg warns of nothing', async (t) => {
  const db = await testDatabase(t)
  const warnings: string[] = []
  const onWarning = (w: Error): void => { warnings.push(`${w.name}: ${w.message}`) }
  process.on('warning', onWarning)
  let lost = 0
  const session = createPgSession({ connection: { connectionString: db.url }, channels: [], deadlineMs: 1500, onLost: () => { lost++ } })
  t.teardown(async () => {
    process.off('warning', onWarning)
    await session.close()
  })
  await session.start()
  // Three queries at once, as the heartbeat, a capture poll and a leader check can meet. Each
  // answers within the deadline, all three together do not: a deadline counted from the call
  // would take this healthy connection for a dead one.
  const sql = (n: number): string => `SELECT ${n} AS n, clock_timestamp() AS began, pg_sleep(0.6), clock_timestamp() AS ended`
  const results = await Promise.all([1, 2, 3].map(async (n) => await session.query<{ n: number, began: Date, ended: Date }>(sql(n))))
  const rows = results.map(r => r.rows[0] as { n: number, began: Date, ended: Date })
  t.same(rows.map(r => r.n), [1, 2, 3])
  t.ok(rows.every((r, i) => i === 0 || r.began >= (rows[i - 1] as { ended: Date }).ended), 'one after the other, in call order: each began once the one before had ended')
  t.equal(lost, 0, 'the connection was never dropped')
  t.equal(session.deadlines, 0)
  t.ok(session.connected)
  // Node emits a warning on the next tick after it is raised.
  await new Promise(resolve => setImmediate(resolve))
  t.same(warnings.filter(w => /client\.query|pg@9/.test(w)), [], "no pg deprecation warning (pg 9 drops the client's own queue)")
})
