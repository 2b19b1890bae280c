import t from 'tap'
import pg from 'pg'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { addCita, addNegocio, build, Client, fixedPort, leading, listen, logged, serviceToken, sign, testDatabase, waitFor } from '../helper.js'
import { tcpProxyFor } from '../fixtures/proxy.js'
import { NO_REDIS, redisUrl as runRedisUrl } from '../fixtures/own-servers.js'

const statsOf = (c: Client): number[] => c.received.filter(m => m.type === 'stats').map(m => m.data.total_citas as number)
/** A ping's pong: whatever the server wrote before it has arrived. */
async function pong (c: Client): Promise<void> {
  c.send({ type: 'ping' })
  await c.nextMatching(m => m.type === 'pong')
}

t.test('a direct write reaches dashboards without NOTIFY on the write path, from a role with no privilege on the change table', async (t) => {
  const { app, db } = await build(t)
  const { ws } = await listen(app)
  await addNegocio(db.pool, 'n1')
  const a = await Client.open(`${ws}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
  t.match(await a.subscribe('n1'), { data: { total_citas: 0 } })

  // The migration left the new triggers and nothing that calls pg_notify on citas.
  const { rows: triggers } = await db.pool.query(`
    SELECT tgname, p.prosrc FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid
    WHERE tgrelid = 'citas'::regclass AND NOT tgisinternal AND tgname LIKE 'citas_live%' ORDER BY tgname`)
  t.same(triggers.map(r => r.tgname), ['citas_live_cambios', 'citas_live_cambios_update', 'citas_live_truncate'])
  t.notOk(triggers.some(r => /pg_notify/.test(r.prosrc)), 'no trigger function on citas calls pg_notify')

  // A REST API role that may write citas and nothing of citas-live's.
  const role = `writer_${randomBytes(4).toString('hex')}`
  await db.pool.query(`CREATE ROLE ${role}`)
  t.teardown(async () => { await db.pool.query(`DROP OWNED BY ${role}; DROP ROLE ${role}`).catch(() => {}) })
  await db.pool.query(`GRANT INSERT, UPDATE, DELETE, SELECT ON citas TO ${role}; GRANT SELECT ON negocios TO ${role}`)
  const oldChannel = new pg.Client({ connectionString: db.url })
  await oldChannel.connect()
  t.teardown(() => oldChannel.end())
  const heard: string[] = []
  oldChannel.on('notification', (n) => heard.push(n.channel))
  await oldChannel.query('LISTEN citas_live_cambios')

  const c = await db.pool.connect()
  try {
    await c.query(`SET ROLE ${role}`)
    await c.query("INSERT INTO citas (negocio_id, fecha_hora, estado) VALUES ('n1', now(), 'atendida')")
    await c.query('RESET ROLE')
  } finally {
    c.release()
  }
  t.match(await a.next(), { type: 'stats', data: { negocio_id: 'n1', total_citas: 1, citas_completadas: 1 } })
  await oldChannel.query('SELECT 1')
  t.same(heard, [], 'nothing on the old NOTIFY channel')
})

t.test('what the trigger records: every figure-moving write, not updates that move no figure', async (t) => {
  const db = await testDatabase(t)
  await addNegocio(db.pool, 'n1')
  await addNegocio(db.pool, 'n2')
  const c = await db.pool.connect()
  t.teardown(() => c.release())
  // Inside one transaction its own rows are visible (and no server drains this database).
  const recorded = async (): Promise<string[]> => (await c.query('SELECT negocio_id FROM citas_live_cambios ORDER BY negocio_id')).rows.map(r => r.negocio_id)
  await c.query('BEGIN')
  const { rows } = await c.query("INSERT INTO citas (negocio_id, fecha_hora, estado) VALUES ('n1', now(), 'pendiente') RETURNING id")
  const id = rows[0].id
  t.same(await recorded(), ['n1'], 'insert')
  await c.query('DELETE FROM citas_live_cambios')
  await c.query("UPDATE citas SET estado = 'confirmada', updated_at = now() WHERE id = $1", [id])
  t.same(await recorded(), [], 'pendiente to confirmada moves no figure')
  await c.query("UPDATE citas SET estado = 'atendida' WHERE id = $1", [id])
  t.same(await recorded(), ['n1'], 'to atendida')
  await c.query('DELETE FROM citas_live_cambios')
  await c.query("UPDATE citas SET fecha_hora = fecha_hora - interval '3 days' WHERE id = $1", [id])
  t.same(await recorded(), ['n1'], 'moved to another day')
  await c.query('DELETE FROM citas_live_cambios')
  await c.query("UPDATE citas SET negocio_id = 'n2' WHERE id = $1", [id])
  t.same(await recorded(), ['n1', 'n2'], 'moved to another negocio: both')
  await c.query('DELETE FROM citas_live_cambios')
  await c.query('DELETE FROM citas WHERE id = $1', [id])
  t.same(await recorded(), ['n2'], 'delete')
  await c.query('DELETE FROM citas_live_cambios')
  await c.query('TRUNCATE citas')
  t.same(await recorded(), ['*'], 'truncate: any')
  await c.query('ROLLBACK')
})

t.test('one push per change, at most two recomputes: a commit both captured and notified', async (t) => {
  // A poll that drains the commit before its notify arrives leaves the notify a recompute of its own
  // (it cannot know its write went through the trigger): correct, one query more, nothing pushed twice.
  const { app, db } = await build(t)
  const { ws } = await listen(app)
  await addNegocio(db.pool, 'n1')
  await leading(app)
  const a = await Client.open(`${ws}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
  await a.subscribe('n1')
  const notify = async () => (await app.inject({
    method: 'POST',
    url: '/notify/cita',
    headers: { authorization: `Bearer ${serviceToken()}` },
    payload: { negocio_id: 'n1', action: 'created' }
  })).json()

  // The REST API's way: commit, then notify at once (the notify usually comes before the poll).
  const runs0 = app.citasLive.live.runs
  for (let i = 1; i <= 20; i++) {
    await addCita(db.pool, 'n1', new Date())
    const body = await notify()
    t.equal(body.stats.total_citas, i, `notify ${i} answers figures that include its commit`)
  }
  t.ok(app.citasLive.live.runs - runs0 <= 40, `20 changes cost ${app.citasLive.live.runs - runs0} recomputes (at most 40)`)
  await waitFor(() => statsOf(a).at(-1) === 20)
  t.same(statsOf(a), Array.from({ length: 21 }, (_, i) => i), 'every figure once, none twice in a row')

  // A notify long after its change was captured and pushed: it cannot know its change was the one
  // captured (a write may bypass the trigger), so it recomputes; the same figures push nothing.
  await addCita(db.pool, 'n1', new Date())
  await waitFor(() => statsOf(a).at(-1) === 21)
  const runs1 = app.citasLive.live.runs
  const late = await notify()
  t.match(late, { delivered: 0, bus: 'sent', stats: { total_citas: 21 } })
  t.equal(app.citasLive.live.runs, runs1 + 1, 'one query of its own')
  await pong(a)
  t.equal(statsOf(a).length, 22, 'and no second push')
})

t.test('a notify for a write the trigger never saw still recomputes on the capture leader', async (t) => {
  const { app, db } = await build(t)
  const { ws } = await listen(app)
  await addNegocio(db.pool, 'n1')
  // A new leader's first poll hands on '*': a resync that, coming after the write below, would push
  // its figures before the notify did.
  await leading(app)
  const a = await Client.open(`${ws}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
  await a.subscribe('n1')
  const notify = async () => await app.inject({ method: 'POST', url: '/notify/cita', headers: { authorization: `Bearer ${serviceToken()}` }, payload: { negocio_id: 'n1', action: 'created' } })
  // A write that bypasses triggers (a bulk load, logical replication into this database).
  await db.pool.query("INSERT INTO citas (negocio_id, fecha_hora) SELECT 'n1', now() FROM (SELECT set_config('session_replication_role', 'replica', true)) s")
  t.match((await notify()).json(), { delivered: 1, stats: { total_citas: 1 } })
  t.match(await a.nextMatching(m => m.type === 'stats' && m.data.total_citas === 1), { data: { total_citas: 1 } })
})

t.test('a resync after the session is cut pushes only what changed meanwhile', async (t) => {
  const { app, db } = await build(t)
  const { ws } = await listen(app)
  await addNegocio(db.pool, 'n1')
  await addNegocio(db.pool, 'n2')
  await leading(app)
  const a = await Client.open(`${ws}/ws?token=${sign({ negocios: ['n1', 'n2'] })}`, t)
  await a.subscribe('n1')
  await a.subscribe('n2')
  const runs = app.citasLive.live.runs
  const reconnects = app.citasLive.live.busReconnects
  await db.pool.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'citas-live-listener'")
  await waitFor(() => app.citasLive.live.busReconnects > reconnects && app.citasLive.live.runs >= runs + 2)
  await waitFor(() => app.citasLive.live.waiting === 0 && app.citasLive.live.status().changeCapture.role === 'leader')
  await pong(a)
  t.same(statsOf(a), [0, 0], 'the resync recomputed both channels and pushed neither: nothing changed')
})

t.test('a session that stops answering without closing is replaced: /ready degraded meanwhile, a silent leader taken over', async (t) => {
  const db = await testDatabase(t)
  await addNegocio(db.pool, 'n1')
  const proxy = await tcpProxyFor(db.url)
  t.teardown(() => proxy.close())
  const { app } = await build(t, { database: db, live: { session: proxy.through(db.url), heartbeatMs: 300, deadlineMs: 600 } })
  const { ws } = await listen(app)
  await waitFor(() => app.citasLive.live.status().changeCapture.role === 'leader')
  const a = await Client.open(`${ws}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
  await a.subscribe('n1')

  // The route drops the connection's state: no packet either way, nothing closed.
  proxy.freezeExisting()
  await addCita(db.pool, 'n1', new Date())
  let degraded: any
  await waitFor(async () => {
    degraded = (await app.inject('/ready')).json()
    return degraded.status === 'degraded'
  }, 15_000)
  t.match(degraded, { status: 'degraded', bus: { kind: 'postgres', up: false } })

  // The new session finds the lock held by the old backend, whose client is gone; it ends it and leads.
  await waitFor(() => statsOf(a).at(-1) === 1, 15_000)
  t.pass('the change written while the session was dead reached the subscriber')
  await waitFor(async () => (await app.inject('/ready')).json().status === 'ready')
  await waitFor(() => app.citasLive.live.status().changeCapture.role === 'leader', 15_000)
  t.pass('it leads again')
  await addCita(db.pool, 'n1', new Date())
  await waitFor(() => statsOf(a).at(-1) === 2)
  t.pass('and changes keep flowing')
})

t.test('two instances: one drains the change table; when it goes, the other takes over', async (t) => {
  const db = await testDatabase(t)
  await addNegocio(db.pool, 'n1')
  const first = await build(t, { database: db })
  await waitFor(() => first.app.citasLive.live.status().changeCapture.role === 'leader')
  const second = await build(t, { database: db })
  await waitFor(() => second.app.citasLive.live.status().changeCapture.role === 'follower')
  const { ws } = await listen(second.app)
  const a = await Client.open(`${ws}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
  await a.subscribe('n1')
  await addCita(db.pool, 'n1', new Date())
  await waitFor(() => statsOf(a).at(-1) === 1)
  t.equal(second.app.citasLive.live.captureChanges, 0, 'the follower drained nothing: the leader told it over the bus')

  await first.app.close()
  await waitFor(() => second.app.citasLive.live.status().changeCapture.role === 'leader', 10_000)
  await addCita(db.pool, 'n1', new Date())
  await waitFor(() => statsOf(a).at(-1) === 2)
  t.pass('the new leader drains and delivers')
})

t.test('redis bus down at start: the instance subscribes when it comes up, resyncs, and notifies say who was not reached', { skip: NO_REDIS }, async (t) => {
  const port = fixedPort()
  const redisUrl = `redis://127.0.0.1:${port}`
  const busSecret = randomBytes(24).toString('hex')
  const db = await testDatabase(t)
  await addNegocio(db.pool, 'n1')
  const leader = await build(t, { database: db, live: { bus: 'redis', redisUrl, busSecret, heartbeatMs: 300, deadlineMs: 600 } })
  await waitFor(() => leader.app.citasLive.live.status().changeCapture.role === 'leader')
  const other = await build(t, { database: db, live: { bus: 'redis', redisUrl, busSecret, heartbeatMs: 300, deadlineMs: 600 } })
  const { ws } = await listen(other.app)
  // The first database probe may not have answered yet on a busy machine (/ready then says unavailable).
  let ready: unknown
  await waitFor(async () => { ready = (await other.app.inject('/ready')).json(); return (ready as { status: string }).status !== 'unavailable' })
  t.match(ready, { status: 'degraded', bus: { kind: 'redis', up: false } })
  const a = await Client.open(`${ws}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
  await a.subscribe('n1')

  await addCita(db.pool, 'n1', new Date())
  const res = await leader.app.inject({ method: 'POST', url: '/notify/cita', headers: { authorization: `Bearer ${serviceToken()}` }, payload: { negocio_id: 'n1', action: 'created' } })
  t.equal(res.statusCode, 200)
  t.match(res.json(), { bus: 'unreachable', stats: { total_citas: 1 } }, 'the answer says the other instances were not told')

  const redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
  t.teardown(() => { redis.kill('SIGKILL') })
  await waitFor(() => other.app.citasLive.live.status().bus.up && leader.app.citasLive.live.status().bus.up, 15_000)
  await waitFor(() => statsOf(a).at(-1) === 1, 15_000)
  t.pass('the subscriber of the instance that started without Redis ends on the database\'s figures')
  t.match((await other.app.inject('/ready')).json(), { status: 'ready' })
  await addCita(db.pool, 'n1', new Date())
  await waitFor(() => statsOf(a).at(-1) === 2)
  t.pass('and changes flow through Redis')
})

t.test('a Redis connection that stops answering is replaced and followed by a resync', { skip: NO_REDIS }, async (t) => {
  const redisUrl = new URL(await runRedisUrl(t))
  const proxy = await tcpProxyFor(redisUrl.href)
  t.teardown(() => proxy.close())
  const db = await testDatabase(t)
  await addNegocio(db.pool, 'n1')
  // A key, so a channel, of their own: the shared Redis carries other tests' messages.
  const busSecret = randomBytes(24).toString('hex')
  // The notifying instance leads, so it computes the notify itself (a follower would ask the other).
  const direct = await build(t, { database: db, live: { bus: 'redis', redisUrl: redisUrl.toString(), busSecret, changeCapture: false } })
  await waitFor(() => direct.app.citasLive.live.status().changeCapture.role === 'leader')
  const viaProxy = await build(t, { database: db, live: { bus: 'redis', redisUrl: proxy.through(redisUrl.toString()), busSecret, heartbeatMs: 300, deadlineMs: 600, changeCapture: false } })
  await waitFor(() => viaProxy.app.citasLive.live.status().bus.up && direct.app.citasLive.live.status().bus.up)
  const { ws } = await listen(viaProxy.app)
  const a = await Client.open(`${ws}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
  await a.subscribe('n1')

  proxy.freezeExisting()
  // A change published while the subscriber's connection is dead: lost on the wire.
  await addCita(db.pool, 'n1', new Date())
  const res = await direct.app.inject({ method: 'POST', url: '/notify/cita', headers: { authorization: `Bearer ${serviceToken()}` }, payload: { negocio_id: 'n1', action: 'created' } })
  t.match(res.json(), { bus: 'sent', stats: { total_citas: 1 } })
  await waitFor(async () => (await viaProxy.app.inject('/ready')).json().status === 'degraded', 15_000)
  await waitFor(() => statsOf(a).at(-1) === 1, 15_000)
  t.pass('after the new connection subscribed, the resync brought the missed change')
  // The publisher's connection was frozen too: ready once it was replaced as well.
  await waitFor(async () => (await viaProxy.app.inject('/ready')).json().status === 'ready', 15_000)
  t.match((await viaProxy.app.inject('/ready')).json(), { status: 'ready', bus: { kind: 'redis', up: true } })
})

t.test('a database without the change table: said once, shown in /ready, and capture resumes once it exists', async (t) => {
  const db = await testDatabase(t)
  await addNegocio(db.pool, 'n1')
  await db.pool.query('ALTER TABLE citas_live_cambios RENAME TO citas_live_cambios_away')
  const { app } = await build(t, { database: db })
  const { ws } = await listen(app)
  const a = await Client.open(`${ws}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
  await a.subscribe('n1')
  await waitFor(async () => (await app.inject('/ready')).json().change_capture.mode === 'failing')
  t.match((await app.inject('/ready')).json(), { status: 'ready', change_capture: { mode: 'failing', role: 'leader' } })
  const told = logged(/citas_live_cambios does not exist: run the migrations/)
  t.equal(told.length, 1, 'one line, not one per poll')
  t.equal(told[0]?.level, 50, 'at error level')

  await db.pool.query('ALTER TABLE citas_live_cambios_away RENAME TO citas_live_cambios')
  await waitFor(() => app.citasLive.live.status().changeCapture.mode === 'table')
  t.equal(logged(/the change table can be read again/).length, 1)
  await addCita(db.pool, 'n1', new Date())
  await waitFor(() => statsOf(a).at(-1) === 1)
  t.pass('direct writes reach dashboards again')
})
