import t from 'tap'
import pg from 'pg'
import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import { addCita, addNegocio, build, Client, listen, serviceToken, sign, testDatabase, waitFor } from '../helper.js'
import { NO_REDIS, redisUrl } from '../fixtures/own-servers.js'

async function notify (http: string, negocioId: string): Promise<Response> {
  return await fetch(`${http}/notify/cita`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${serviceToken()}` },
    body: JSON.stringify({ negocio_id: negocioId, action: 'updated' })
  })
}

async function dbStats (pool: pg.Pool, negocioId: string) {
  const { rows } = await pool.query(`SELECT count(*)::int AS total_citas,
    (count(*) FILTER (WHERE estado = 'atendida'))::int AS citas_completadas,
    (count(*) FILTER (WHERE estado = 'cancelada'))::int AS citas_canceladas
    FROM citas WHERE negocio_id = $1`, [negocioId])
  return rows[0]
}

t.test('1,000 notifies that arrive while a stats query runs cost one more query; every subscriber ends with the final counts', async (t) => {
  const { app, db } = await build(t, { live: { changeCapture: false } })
  const { ws } = await listen(app)
  await addNegocio(db.pool, 'n1')
  const clients = await Promise.all(Array.from({ length: 50 }, async (_, i) => {
    const c = await Client.open(`${ws}/ws?token=${sign({ sub: `u${i}`, negocio_id: 'n1' })}`, t)
    await c.subscribe('n1')
    return c
  }))
  const inject = async () => await app.inject({
    method: 'POST', url: '/notify/cita', headers: { authorization: `Bearer ${serviceToken()}` }, payload: { negocio_id: 'n1', action: 'created' }
  })

  // Hold the first stats query behind a table lock, so every other notify arrives while it runs.
  const locker = new pg.Client({ connectionString: db.url })
  await locker.connect()
  t.teardown(() => locker.end())
  await locker.query('BEGIN')
  await locker.query('LOCK TABLE citas IN ACCESS EXCLUSIVE MODE')
  const before = app.citasLive.stats.queryCount
  const first = inject()
  await waitFor(() => app.citasLive.live.waiting === 1)
  // The writes the burst is about, committed with the lock's release.
  await locker.query(`INSERT INTO citas (negocio_id, fecha_hora, estado)
    SELECT 'n1', now(), CASE WHEN g % 2 = 0 THEN 'atendida' ELSE 'cancelada' END FROM generate_series(1, 20) g`)
  const rest = Array.from({ length: 999 }, inject)
  await waitFor(() => app.citasLive.live.waiting === 1000, 10_000)
  await locker.query('COMMIT')

  const replies = await Promise.all([first, ...rest])
  t.ok(replies.every(r => r.statusCode === 200), 'every notify answered 200')
  t.equal(app.citasLive.stats.queryCount - before, 2, 'the query in flight, and one more shared by the 999 that came during it')
  const final = await dbStats(db.pool, 'n1')
  t.same(final, { total_citas: 20, citas_completadas: 10, citas_canceladas: 10 })
  t.ok(replies.slice(1).every(r => r.json().stats.total_citas === 20), 'each reply carries stats computed after it arrived')
  for (const c of clients) {
    await waitFor(() => c.received.at(-1)?.data?.total_citas === final.total_citas)
    t.match(c.received.at(-1), { type: 'stats', data: final })
  }
})

t.test('each notify reply waits for a recompute that started after it arrived', async (t) => {
  const { app, db } = await build(t, { live: { changeCapture: false } })
  const { http } = await listen(app)
  await addNegocio(db.pool, 'n1')
  for (let i = 1; i <= 20; i++) {
    await addCita(db.pool, 'n1', new Date())
    const body = await (await notify(http, 'n1')).json() as { stats: { total_citas: number } }
    t.equal(body.stats.total_citas, i)
  }
})

t.test('snapshot cache: many subscribes to a cold channel cost one query, warm ones none', async (t) => {
  // One token for 200 sockets: the per-user connection limit is not what this measures.
  const { app, db } = await build(t, { live: { changeCapture: false }, limits: { maxConnectionsPerUser: 0 } })
  const { ws } = await listen(app)
  await addNegocio(db.pool, 'n1')
  await addCita(db.pool, 'n1', new Date())
  const before = app.citasLive.stats.queryCount
  const token = sign({ negocio_id: 'n1' })
  const clients = await Promise.all(Array.from({ length: 200 }, async () => await Client.open(`${ws}/ws?token=${token}`, t)))
  const first = await Promise.all(clients.map(async c => await c.subscribe('n1')))
  for (const m of first) t.match(m, { type: 'stats', data: { total_citas: 1 } })
  t.equal(app.citasLive.stats.queryCount - before, 1, 'one query for 200 cold subscribes')
  // No run is left that could push again; a pong comes after anything already sent on its socket.
  t.equal(app.citasLive.live.waiting, 0)
  await Promise.all(clients.map(async c => await c.request({ type: 'ping' })))
  t.ok(clients.every(c => c.received.filter(m => m.type === 'stats').length === 1), 'each got the snapshot once')

  const late = await Client.open(`${ws}/ws?token=${token}`, t)
  t.match(await late.subscribe('n1'), { data: { total_citas: 1 } })
  t.equal(app.citasLive.stats.queryCount - before, 1, 'a warm subscribe is answered from memory')
  t.equal(app.citasLive.live.cacheSize, 1)
  for (const c of [...clients, late]) c.ws.terminate()
  await waitFor(() => app.citasLive.live.cacheSize === 0)
  t.pass('the snapshot goes with the last subscriber')
})

for (const bus of ['postgres', 'redis'] as const) {
  t.test(`two instances on one database (${bus} bus): a notify on A reaches clients on B; only A queries`, { skip: bus === 'redis' && NO_REDIS }, async (t) => {
    const db = await testDatabase(t)
    // A bus key of its own: other test files' instances share the Redis.
    const live = { bus, ...(bus === 'redis' ? { redisUrl: await redisUrl(t) } : {}), changeCapture: false, busSecret: randomBytes(24).toString('hex') }
    const a = await build(t, { database: db, live: { ...live, instanceId: 'A' } })
    // A leads (a follower hands its notifies to the leader): on a busy machine B's session could
    // otherwise take the lease first.
    await waitFor(() => a.app.citasLive.live.status().changeCapture.role === 'leader')
    const b = await build(t, { database: db, live: { ...live, instanceId: 'B' } })
    const urlA = await listen(a.app)
    const urlB = await listen(b.app)
    // Both on the bus before anyone subscribes: an instance recomputes what it shows when its
    // subscription is in place, which would be a query on B if it came after the subscribes.
    await waitFor(() => a.app.citasLive.live.status().bus.up && b.app.citasLive.live.status().bus.up)
    await addNegocio(db.pool, 'n1')
    const onB = await Client.open(`${urlB.ws}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
    const onA = await Client.open(`${urlA.ws}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
    t.match(await onB.subscribe('n1'), { data: { total_citas: 0 } })
    t.match(await onA.subscribe('n1'), { data: { total_citas: 0 } })
    const queriesA = a.app.citasLive.stats.queryCount
    const queriesB = b.app.citasLive.stats.queryCount

    await addCita(db.pool, 'n1', new Date(), 'atendida')
    t.equal((await notify(urlA.http, 'n1')).status, 200)
    t.match(await onA.next(), { type: 'stats', data: { total_citas: 1, citas_completadas: 1 } })
    t.match(await onB.next(), { type: 'stats', data: { total_citas: 1, citas_completadas: 1 } })
    t.equal(a.app.citasLive.stats.queryCount - queriesA, 1, 'A ran the query')
    t.equal(b.app.citasLive.stats.queryCount - queriesB, 0, 'B only delivered')

    // The bus result also refreshes B's snapshot: a new subscriber on B gets it without a query.
    const late = await Client.open(`${urlB.ws}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
    t.match(await late.subscribe('n1'), { data: { total_citas: 1 } })
    t.equal(b.app.citasLive.stats.queryCount - queriesB, 0)
  })
}

/** An app (built with `opts`) with businesses n1 and n2, and one client subscribed to both. */
async function watchingTwo (t: Parameters<typeof build>[0], opts: Parameters<typeof build>[1] = {}) {
  const { app, db } = await build(t, opts)
  const { ws } = await listen(app)
  await addNegocio(db.pool, 'n1')
  await addNegocio(db.pool, 'n2')
  const c = await Client.open(`${ws}/ws?token=${sign({ negocios: ['n1', 'n2'] })}`, t)
  await c.subscribe('n1')
  await c.subscribe('n2')
  return { app, db, c }
}

t.test('change capture: a plain SQL write reaches dashboards with no notify', async (t) => {
  const { app, db, c } = await watchingTwo(t)

  await db.pool.query("INSERT INTO citas (negocio_id, fecha_hora, estado) VALUES ('n1', now(), 'pendiente')")
  t.match(await c.next(), { type: 'stats', data: { negocio_id: 'n1', total_citas: 1, citas_hoy: 1 } })

  await db.pool.query("UPDATE citas SET estado = 'cancelada' WHERE negocio_id = 'n1'")
  t.match(await c.next(), { data: { negocio_id: 'n1', citas_canceladas: 1 } })

  // Moving a cita to another negocio changes both.
  await db.pool.query("UPDATE citas SET negocio_id = 'n2' WHERE negocio_id = 'n1'")
  const moved = [await c.next(), await c.next()].sort((x, y) => x.data.negocio_id.localeCompare(y.data.negocio_id))
  t.match(moved, [{ data: { negocio_id: 'n1', total_citas: 0 } }, { data: { negocio_id: 'n2', total_citas: 1 } }])

  await db.pool.query("DELETE FROM citas WHERE negocio_id = 'n2'")
  t.match(await c.next(), { data: { negocio_id: 'n2', total_citas: 0 } })

  // A rolled-back write tells nobody; a 500-row batch is one push.
  const client = await db.pool.connect()
  await client.query('BEGIN')
  await client.query("INSERT INTO citas (negocio_id, fecha_hora) VALUES ('n1', now())")
  await client.query('ROLLBACK')
  await client.query("INSERT INTO citas (negocio_id, fecha_hora) SELECT 'n1', now() FROM generate_series(1, 500)")
  client.release()
  t.match(await c.next(), { data: { negocio_id: 'n1', total_citas: 500 } })
  t.ok(await c.silentFor(300), 'one push for the batch')

  const queries = app.citasLive.stats.queryCount
  await db.pool.query('TRUNCATE citas')
  t.match(await c.next(), { data: { negocio_id: 'n1', total_citas: 0 } }, 'TRUNCATE recomputes every channel shown')
  // Both channels recomputed (in one statement) and done: n2's push, had there been one, came before this pong.
  await waitFor(() => app.citasLive.stats.queryCount - queries >= 1 && app.citasLive.live.waiting === 0)
  t.same(await c.request({ type: 'ping' }), { type: 'pong' }, 'and pushes only those that changed (n2 had none)')
})

t.test('a negocio written non-stop: its subscribers get its latest figures once per gap, and the others are not held up', async (t) => {
  const { db, c } = await watchingTwo(t, { live: { coalesceMs: 200 } })
  const seen = c.received.length
  const t0 = Date.now()
  const drained = async (): Promise<boolean> => (await db.pool.query('SELECT count(*)::int AS n FROM citas_live_cambios')).rows[0].n === 0
  // Bounded: 150 single-row commits to n1, each drained by a capture poll before the next (so every
  // poll finds n1), and one to n2 in the middle.
  for (let i = 1; i <= 150; i++) {
    await db.pool.query("INSERT INTO citas (negocio_id, fecha_hora) VALUES ('n1', now())")
    await waitFor(drained)
    if (i === 75) await db.pool.query("INSERT INTO citas (negocio_id, fecha_hora) VALUES ('n2', now())")
  }
  const elapsed = Date.now() - t0
  await waitFor(() => c.received.at(-1)?.data?.negocio_id === 'n1' && c.received.at(-1)?.data?.total_citas === 150)
  const n1 = c.received.slice(seen).filter((m) => m.data?.negocio_id === 'n1')
  t.ok(n1.length <= Math.ceil(elapsed / 200) + 3, `${n1.length} messages for 150 commits in ${elapsed} ms: about one per 200 ms gap, not one per commit or per poll`)
  t.match(n1.at(-1), { type: 'stats', data: { total_citas: 150 } }, 'the last carries the final figures')
  t.ok(n1.every((m, i) => i === 0 || m.data.total_citas > (n1[i - 1]?.data.total_citas ?? 0)), 'each newer than the one before')
  t.match(c.received.slice(seen).find((m) => m.data?.negocio_id === 'n2'), { data: { total_citas: 1 } }, 'the other negocio got its change')
})

t.test('the LISTEN connection is killed: it comes back, resyncs, and later changes still arrive', async (t) => {
  const { app, db } = await build(t)
  const { ws } = await listen(app)
  await addNegocio(db.pool, 'n1')
  const c = await Client.open(`${ws}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
  await c.subscribe('n1')

  const { rows } = await db.pool.query(
    "SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity WHERE datname = $1 AND application_name = 'citas-live-listener'", [db.name])
  t.equal(rows.length, 1, 'one dedicated listener connection')
  // While it is down, a write happens that nobody hears...
  await addCita(db.pool, 'n1', new Date())
  // ...and the resync after reconnecting pushes it.
  t.match(await c.next(), { type: 'stats', data: { total_citas: 1 } })
  await waitFor(() => app.citasLive.live.busReconnects === 1)
  await addCita(db.pool, 'n1', new Date())
  t.match(await c.next(), { type: 'stats', data: { total_citas: 2 } })
})

t.test('the Redis bus connection is killed: it comes back and resyncs', { skip: NO_REDIS }, async (t) => {
  const REDIS_URL = await redisUrl(t)
  const { app, db } = await build(t, { live: { bus: 'redis', redisUrl: REDIS_URL, changeCapture: false, instanceId: `kill-${process.pid}`, busSecret: randomBytes(24).toString('hex') } })
  const { ws } = await listen(app)
  await addNegocio(db.pool, 'n1')
  // Subscribed on Redis first: every subscription resyncs, the first one too.
  await waitFor(() => app.citasLive.live.status().bus.up)
  const c = await Client.open(`${ws}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
  await c.subscribe('n1')
  await addCita(db.pool, 'n1', new Date())
  const admin = new Redis(REDIS_URL)
  t.teardown(() => admin.disconnect())
  const list = await admin.client('LIST') as string
  // This instance's subscriber only: other test files share this Redis.
  const ids = list.split('\n').filter(l => l.includes(`name=citas-live-sub/kill-${process.pid} `)).map(l => /id=(\d+)/.exec(l)?.[1])
  t.ok(ids.length >= 1)
  for (const id of ids) await admin.client('KILL', 'ID', id as string)
  t.match(await c.next(), { type: 'stats', data: { total_citas: 1 } }, 'resync after reconnect')
  t.ok(app.citasLive.live.busReconnects >= 1)
})

t.test('midnight: citas_hoy changes with no write when the business\'s day ends', async (t) => {
  // An injected clock, held one second before midnight in Mexico City (UTC-6): the server arms its
  // timer for then; the test moves the clock past midnight and the timer finds the day over.
  const midnight = Date.parse('2026-03-10T06:00:00Z')
  let clock = midnight - 1000
  const now = () => new Date(clock)
  const { app, db } = await build(t, { stats: { now }, live: { changeCapture: false } })
  const { ws } = await listen(app)
  await addNegocio(db.pool, 'mx', 'America/Mexico_City')
  await addCita(db.pool, 'mx', '2026-03-09T20:00:00Z') // the 9th, local
  await addCita(db.pool, 'mx', '2026-03-10T15:00:00Z') // the 10th, local
  await addCita(db.pool, 'mx', '2026-03-10T16:00:00Z') // the 10th, local
  const c = await Client.open(`${ws}/ws?token=${sign({ negocio_id: 'mx' })}`, t)
  t.match(await c.subscribe('mx'), { data: { citas_hoy: 1, total_citas: 3 } })
  // The server armed its timer (1 s ahead by the injected clock) before sending the snapshot.
  const runs = app.citasLive.live.runs
  const checks = app.citasLive.live.midnightChecks
  await waitFor(() => app.citasLive.live.midnightChecks > checks)
  t.equal(app.citasLive.live.runs, runs, 'its timer found the day not over: no recompute')
  t.same(await c.request({ type: 'ping' }), { type: 'pong' }, 'nothing before midnight')
  clock = midnight + 1
  t.match(await c.next(), { type: 'stats', data: { citas_hoy: 2, total_citas: 3 } }, 'pushed at local midnight')
})

t.test('reconcile: a periodic recompute pushes only what changed', async (t) => {
  const { app, db } = await build(t, { live: { changeCapture: false, reconcileSeconds: 0.3 } })
  const { ws } = await listen(app)
  await addNegocio(db.pool, 'n1')
  const c = await Client.open(`${ws}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
  await c.subscribe('n1')
  const queries = app.citasLive.stats.queryCount
  // A second periodic run has started, so the first one has ended (one run at a time per negocio).
  await waitFor(() => app.citasLive.stats.queryCount - queries >= 2)
  t.pass('it recomputes on its own')
  t.same(await c.request({ type: 'ping' }), { type: 'pong' }, 'nothing changed: nothing pushed')
  await addCita(db.pool, 'n1', new Date()) // no notify, no trigger
  t.match(await c.next(), { data: { total_citas: 1 } })
})
