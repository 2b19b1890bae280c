import t from 'tap'
import { createPgSession } from '../../services/pg-session.js'
import { tcpProxyFor } from '../fixtures/proxy.js'
import { testDatabase, waitFor } from '../helper.js'

// The dedicated session (LISTEN, change capture, leader lock) against a database that goes away
// for long. The database is a test database of the shared server behind a proxy that refuses
// connections: for the session, a server that is down. The server itself never stops.

t.test('after a long outage the session tries again at least every second, and is back (LISTEN included) within about a second of the database', async (t) => {
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
  // Eight refused attempts: a backoff that kept doubling from 100 ms would now wait up to 10 s or more between attempts.
  await waitFor(() => proxy.refused >= 8, 60_000)
  const at: number[] = []
  for (let i = 0; i < 5; i++) {
    const seen = proxy.refused
    await waitFor(() => proxy.refused > seen, 60_000)
    at.push(Date.now())
  }
  const gaps = at.slice(1).map((a, i) => a - (at[i] as number))
  // At most 1000 ms each, plus a busy machine's timer slack; a 10 s ceiling passes this one time in 700.
  t.ok(gaps.every(g => g <= 2000), `attempts ${gaps.join(', ')} ms apart (each at most 1000, plus timer slack)`)

  // Back right after an attempt was refused: the worst moment.
  const seen = proxy.refused
  await waitFor(() => proxy.refused > seen, 10_000)
  proxy.accept()
  const backAt = Date.now()
  await waitFor(() => session.connected, 15_000)
  const upAfter = Date.now() - backAt
  t.ok(upAfter < 2000, `the session was up again ${upAfter} ms after the database was reachable (at most 2000)`)
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
  const started = Date.now()
  const results = await Promise.all([
    session.query<{ n: number }>('SELECT 1 AS n, pg_sleep(0.6)'),
    session.query<{ n: number }>('SELECT 2 AS n, pg_sleep(0.6)'),
    session.query<{ n: number }>('SELECT 3 AS n, pg_sleep(0.6)')
  ])
  t.same(results.map(r => r.rows[0]?.n), [1, 2, 3])
  t.ok(Date.now() - started >= 1500, 'one after the other, not at once')
  t.equal(lost, 0, 'the connection was never dropped')
  t.equal(session.deadlines, 0)
  t.ok(session.connected)
  // Node emits a warning on the next tick after it is raised.
  await new Promise(resolve => setImmediate(resolve))
  t.same(warnings.filter(w => /client\.query|pg@9/.test(w)), [], "no pg deprecation warning (pg 9 drops the client's own queue)")
})
