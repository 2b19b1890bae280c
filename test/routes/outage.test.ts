import t, { type Test } from 'tap'
import pg from 'pg'
import { addCita, addNegocio, build, Client, leading, listen, logged, serviceToken, sign, waitFor, WAIT_MS } from '../helper.js'

t.test('database outage: 503 fast, sockets stay, subscribes get unavailable; on return every channel is pushed', async (t) => {
  const unhandled: unknown[] = []
  const onUnhandled = (err: unknown): void => { unhandled.push(err) }
  process.on('unhandledRejection', onUnhandled)
  t.teardown(() => { process.off('unhandledRejection', onUnhandled) })

  // No change capture: these writes stand for changes whose notify was lost in the outage.
  const { app, db } = await build(t, { dbMonitor: { probeIntervalMs: 50 }, live: { changeCapture: false } })
  const { ws, http } = await listen(app)
  for (const id of ['n1', 'n2', 'n3']) await addNegocio(db.pool, id)
  const token = sign({ negocios: ['n1', 'n2', 'n3'] })
  const a = await Client.open(`${ws}/ws?token=${token}`, t)
  const b = await Client.open(`${ws}/ws?token=${token}`, t)
  await a.subscribe('n1')
  await b.subscribe('n2')

  // Changes whose notify is lost in the outage (written just before the database went away).
  await addCita(db.pool, 'n1', new Date(), 'atendida')
  await addCita(db.pool, 'n2', new Date())
  await addCita(db.pool, 'n2', new Date())
  await db.setDown(true)
  // /ready answers from a probe at most a second old.
  let ready = await app.inject('/ready')
  await waitFor(async () => (ready = await app.inject('/ready')).statusCode === 503)
  t.match(ready.json(), { status: 'unavailable' })

  const res = await fetch(`${http}/notify/cita`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${serviceToken()}` },
    body: JSON.stringify({ negocio_id: 'n1', action: 'created' }),
    signal: AbortSignal.timeout(WAIT_MS)
  })
  t.equal(res.status, 503, 'answers, without waiting for the database to come back')
  t.same(await res.json(), { statusCode: 503, code: 'unavailable', error: 'Service Unavailable', message: 'statistics are unavailable right now' })
  t.equal(app.citasLive.dbMonitor.isUp, false, 'the failure marked the database down')

  // A subscribe while down to a channel nobody watched: subscribed, then unavailable; it stays subscribed.
  t.same(await b.request({ type: 'subscribe', id: 's', data: { channel: 'estadisticas:n3' } }),
    { type: 'subscribed', id: 's', data: { channel: 'estadisticas:n3' } })
  t.same(await b.next(), { type: 'error', id: 's', data: { code: 'unavailable', message: 'statistics are unavailable right now' } })
  // To a channel with a snapshot: answered from it, no database needed.
  t.same(await b.request({ type: 'subscribe', id: 'c', data: { channel: 'estadisticas:n1' } }),
    { type: 'subscribed', id: 'c', data: { channel: 'estadisticas:n1' } })
  t.match(await b.next(), { type: 'stats', data: { negocio_id: 'n1', total_citas: 0 } }, 'the cached snapshot')
  t.same(await a.request({ type: 'ping' }), { type: 'pong' }, 'sockets stay open')

  // The database comes back: every channel with subscribers catches up without any notify.
  await db.setDown(false)
  t.match(await a.next(), { type: 'stats', data: { negocio_id: 'n1', total_citas: 1, citas_completadas: 1 } })
  // Both the outage monitor and the LISTEN connection's reconnect resync, so a channel may come twice.
  const latest = (): string => {
    const last = new Map<string, number>()
    for (const m of b.received) if (m.type === 'stats') last.set(m.data.negocio_id, m.data.total_citas)
    return JSON.stringify([...last].sort())
  }
  await waitFor(() => latest() === JSON.stringify([['n1', 1], ['n2', 2], ['n3', 0]]))
  t.pass('b gets all of its channels, with the figures written during the outage')
  await waitFor(() => app.citasLive.dbMonitor.isUp)
  t.equal((await app.inject('/ready')).statusCode, 200)
  t.same(unhandled, [], 'no unhandled rejection')
})

t.test('a database that goes away and returns twice: each outage ends with a push', async (t) => {
  const { app, db } = await build(t, { dbMonitor: { probeIntervalMs: 50 }, live: { changeCapture: false } })
  const { ws } = await listen(app)
  await addNegocio(db.pool, 'n1')
  const c = await Client.open(`${ws}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
  await c.subscribe('n1')
  for (let round = 1; round <= 2; round++) {
    await addCita(db.pool, 'n1', new Date())
    await db.setDown(true)
    const res = await app.inject({
      method: 'POST', url: '/notify/cita', headers: { authorization: `Bearer ${serviceToken()}` }, payload: { negocio_id: 'n1', action: 'created' }
    })
    t.equal(res.statusCode, 503)
    await db.setDown(false)
    // The monitor and the LISTEN reconnect both resync: wait for the newest figures, not the next message.
    await waitFor(() => c.received.at(-1)?.data?.total_citas === round)
    t.pass(`round ${round}: pushed after the outage`)
  }
  t.equal(app.citasLive.dbMonitor.outageCount, 2)
})

/** An app on its own database with negocios n1..n3, change capture's leader settled, one client subscribed to all three. */
async function threeChannels (t: Test, probeIntervalMs: number, changeCapture: boolean) {
  const { app, db } = await build(t, { dbMonitor: { probeIntervalMs }, live: { changeCapture } })
  const { ws } = await listen(app)
  for (const id of ['n1', 'n2', 'n3']) await addNegocio(db.pool, id)
  await leading(app)
  const c = await Client.open(`${ws}/ws?token=${sign({ negocios: ['n1', 'n2', 'n3'] })}`, t)
  for (const id of ['n1', 'n2', 'n3']) await c.subscribe(id)
  return { app, db, c }
}

/** Takes the database away and makes a notify fail (so the monitor sees the outage too); returns the live plugin's run count then. */
async function outage (t: Test, app: Awaited<ReturnType<typeof build>>['app'], db: { setDown: (down: boolean) => Promise<void> }): Promise<number> {
  await db.setDown(true)
  const failed = await app.inject({ method: 'POST', url: '/notify/cita', headers: { authorization: `Bearer ${serviceToken()}` }, payload: { negocio_id: 'n2', action: 'created' } })
  t.equal(failed.statusCode, 503)
  return app.citasLive.live.runs
}

for (const changeCapture of [false, true]) {
  t.test(`one outage, one resync: the db monitor and the session's reconnect do not both recompute (change capture ${changeCapture ? 'on' : 'off'})`, async (t) => {
    const { app, db, c } = await threeChannels(t, 50, changeCapture)
    // Something to catch up on: a write during the outage's first moments that nobody notifies.
    await db.pool.query("INSERT INTO citas (negocio_id, fecha_hora) SELECT 'n1', now() FROM (SELECT set_config('session_replication_role', 'replica', true)) s")
    const reconnects = app.citasLive.live.busReconnects
    const recovered = (): number => logged(/^stats recomputed after database outage/).length
    const before = recovered()
    const runs = await outage(t, app, db)
    await db.setDown(false)
    await waitFor(() => recovered() > before && app.citasLive.live.busReconnects > reconnects)
    await waitFor(() => app.citasLive.live.status().changeCapture.role === 'leader' && app.citasLive.live.waiting === 0 && app.citasLive.live.runs - runs >= 3)
    await waitFor(() => c.received.at(-1)?.data?.total_citas === 1)
    c.send({ type: 'ping' })
    await c.nextMatching(m => m.type === 'pong')
    t.equal(app.citasLive.live.runs - runs, 3, 'three channels, three queries')
    t.equal(c.received.filter(m => m.type === 'stats').length, 4, 'and one push: the figures that changed')
  })
}

t.test('one outage, one resync, even when the monitor sees the database back before the new leader\'s first poll hands on its \'*\'', async (t) => {
  // The monitor probes slowly, so the session is back (and leads) first; a lock on the change table
  // holds the new leader's first drain, the moment the monitor could otherwise recompute on its own.
  const { app, db, c } = await threeChannels(t, 1000, true)
  const reconnects = app.citasLive.live.busReconnects
  const back = (): number => logged(/^database is back/).length
  const backBefore = back()
  const recovered = (): number => logged(/^stats recomputed after database outage/).length
  const recoveredBefore = recovered()
  // A write nobody notifies: the one resync after the outage must show it.
  await db.pool.query("INSERT INTO citas (negocio_id, fecha_hora) SELECT 'n1', now() FROM (SELECT set_config('session_replication_role', 'replica', true)) s")
  const runs = await outage(t, app, db)
  await db.setDown(false)
  const locker = new pg.Client({ connectionString: db.url })
  await locker.connect()
  t.teardown(async () => { await locker.end().catch(() => {}) })
  await locker.query('BEGIN')
  await locker.query('LOCK TABLE citas_live_cambios IN EXCLUSIVE MODE')
  await waitFor(() => app.citasLive.live.busReconnects > reconnects && app.citasLive.live.status().changeCapture.role === 'leader' && back() > backBefore, 10_000)
  await waitFor(() => app.citasLive.live.waiting === 0)
  await locker.query('COMMIT')
  await waitFor(() => c.received.at(-1)?.data?.total_citas === 1)
  await waitFor(() => recovered() > recoveredBefore && app.citasLive.live.waiting === 0)
  c.send({ type: 'ping' })
  await c.nextMatching(m => m.type === 'pong')
  t.equal(app.citasLive.live.runs - runs, 3, 'three channels, three queries')
})
