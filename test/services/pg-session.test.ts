import t from 'tap'
import { createPgSession } from '../../services/pg-session.js'
import { tcpProxy } from '../fixtures/proxy.js'
import { testDatabase, waitFor } from '../helper.js'

// The dedicated session (LISTEN, change capture, leader lock) against a database that goes away
// for long. The database is a test database of the shared server behind a proxy that refuses
// connections: for the session, a server that is down. The server itself never stops.

t.test('after a long outage the session tries again at least every second, and is back (LISTEN included) within about a second of the database', async (t) => {
  const db = await testDatabase(t)
  const proxy = await tcpProxy({ host: '127.0.0.1', port: Number(new URL(db.url).port === '' ? 5432 : new URL(db.url).port) })
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
