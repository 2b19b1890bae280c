import t, { type Test } from 'tap'
import pg from 'pg'
import Fastify from 'fastify'
import { Redis } from 'ioredis'
import { randomBytes } from 'node:crypto'
import citasLive from '../../app.js'
import { pgBusChannel } from '../../services/bus/bus.js'
import { createBusCodec } from '../../services/bus/codec.js'
import { migrate } from '../../db/migrations.js'
import { addCita, addNegocio, build, Client, handshake, listen, logged, SECRET, serviceToken, sign, testDatabase, testRole, waitFor, type TestDatabase } from '../helper.js'
import { NO_REDIS, redisUrl } from '../fixtures/own-servers.js'

// A booking database shares its roles with other teams (reports, analysts, support tools). Here
// citas-live runs as the owner of its objects, no superuser; `mallory` is an ordinary role with no
// privilege beyond what the migrations grant PUBLIC; `rest_api` may write citas and nothing else.

/** The advisory lock the capture leader held before the lease (any role could take it). */
const OLD_LEADER_LOCK = [0x63697461, 1] as const

async function connect (t: Test, url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url })
  c.on('error', () => {})
  await c.connect()
  t.teardown(() => c.end().catch(() => {}))
  return c
}

async function roles (t: Test, db: TestDatabase) {
  const mallory = await testRole(t, db, 'mallory')
  const rest = await testRole(t, db, 'rest_api')
  await db.pool.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON citas TO ${rest.name}; GRANT SELECT ON negocios TO ${rest.name}`)
  return { mallory, rest }
}

const statsOf = (c: Client): number[] => c.received.filter(m => m.type === 'stats').map(m => m.data.total_citas)

t.test('only the citas triggers write the change table: a role with no privileges can neither insert into it nor hang the capture on a table of its own', async (t) => {
  const db = await testDatabase(t, { owner: true })
  await addNegocio(db.pool, 'n1')
  const { mallory, rest } = await roles(t, db)
  const { app } = await build(t, { database: db })
  const { ws } = await listen(app)
  const a = await Client.open(`${ws}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
  await a.subscribe('n1')

  const m = await connect(t, mallory.url)
  await t.rejects(m.query("INSERT INTO citas_live_cambios (negocio_id) VALUES ('n1')"), /permission denied/, 'no INSERT')
  await t.rejects(m.query("INSERT INTO citas_live_cambios (negocio_id) SELECT '*' FROM generate_series(1, 1000)"), /permission denied/, 'so no "*" flood')
  await m.query('BEGIN')
  await t.rejects(m.query('LOCK TABLE citas_live_cambios IN ROW EXCLUSIVE MODE'), /permission denied/, 'no lock on it')
  await m.query('ROLLBACK')
  await m.query('CREATE TEMP TABLE mine (negocio_id text)')
  await t.rejects(m.query('CREATE TRIGGER mine_capture AFTER INSERT ON mine FOR EACH ROW EXECUTE FUNCTION citas_live_notify()'), /permission denied for function/, 'nor the capture function on a table of its own')

  // The REST API's role writes citas, and its changes are recorded for it.
  const r = await connect(t, rest.url)
  await r.query("INSERT INTO citas (negocio_id, fecha_hora) VALUES ('n1', now())")
  await waitFor(() => statsOf(a).at(-1) === 1)
  t.pass('a write of the REST API\'s role, which has no privilege of citas-live\'s, reaches the dashboard')
  await t.rejects(r.query("INSERT INTO citas_live_cambios (negocio_id) VALUES ('n1')"), /permission denied/, 'and it cannot write the change table directly either')
})

t.test('rows of any size a role left in the change table before the migration are dropped by it, and capture goes on', async (t) => {
  const db = await testDatabase(t, { owner: true })
  await addNegocio(db.pool, 'n1')
  // The table as migration 004 left it: any role could insert anything.
  await db.pool.query('ALTER TABLE citas_live_cambios ALTER COLUMN negocio_id TYPE text; GRANT INSERT ON citas_live_cambios TO PUBLIC')
  await db.pool.query("DELETE FROM citas_live_migrations WHERE version = '005_capture_trust.sql'")
  const { mallory } = await roles(t, db)
  const m = await connect(t, mallory.url)
  await m.query("INSERT INTO citas_live_cambios (negocio_id) SELECT repeat('x', 4 << 20) FROM generate_series(1, 5)")
  const owner = new pg.Pool({ connectionString: db.url, max: 1 })
  owner.on('error', () => {}) // ended, it may still be closing when the database is dropped
  t.teardown(() => owner.end())
  t.same((await migrate(owner)).applied, ['005_capture_trust.sql'])
  t.same((await db.pool.query('SELECT negocio_id FROM citas_live_cambios')).rows, [{ negocio_id: '*' }], 'the rows are gone; "*" stands for what they said')
  await t.rejects(m.query("INSERT INTO citas_live_cambios (negocio_id) VALUES ('n1')"), /permission denied/)

  const { app } = await build(t, { database: db })
  const { ws } = await listen(app)
  const a = await Client.open(`${ws}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
  await a.subscribe('n1')
  await addCita(db.pool, 'n1', new Date())
  await waitFor(() => statsOf(a).at(-1) === 1)
  t.pass('direct writes reach the dashboard')
})

t.test('the capture leader is citas-live\'s: a role squatting the old advisory lock, idle or busy, neither leads nor stops one being chosen', async (t) => {
  const db = await testDatabase(t, { owner: true })
  await addNegocio(db.pool, 'n1')
  const { mallory } = await roles(t, db)
  const idle = await connect(t, mallory.url)
  await idle.query('SELECT pg_advisory_lock($1, $2)', [...OLD_LEADER_LOCK])
  const busy = await connect(t, mallory.url)
  void busy.query('SELECT pg_advisory_lock_shared($1, $2), pg_sleep(60)', [...OLD_LEADER_LOCK]).catch(() => {})
  await t.rejects(idle.query('SELECT * FROM citas_live_capture_leader'), /permission denied/, 'the lease cannot be read...')
  await t.rejects(idle.query("UPDATE citas_live_capture_leader SET instance = 'mallory'"), /permission denied/, '...nor written')
  await t.rejects(idle.query("INSERT INTO citas_live_capture_leader (instance, pid, backend_start, lease_until) VALUES ('mallory', 1, now(), 'infinity')"), /permission denied/, '...nor taken')

  const { app } = await build(t, { database: db })
  const { ws } = await listen(app)
  await waitFor(() => app.citasLive.live.status().changeCapture.role === 'leader')
  t.pass('citas-live leads')
  const a = await Client.open(`${ws}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
  await a.subscribe('n1')
  await addCita(db.pool, 'n1', new Date())
  await waitFor(() => statsOf(a).at(-1) === 1)
  t.pass('and a direct SQL write reaches the dashboard')
})

t.test('a change table nobody can drain (a lock held on it) shows: /ready degraded with the reason, the drain age in the metrics, one warning; all of it clears by itself', async (t) => {
  const db = await testDatabase(t, { owner: true })
  await addNegocio(db.pool, 'n1')
  const { app } = await build(t, { database: db, live: { captureStallMs: 1500 }, metrics: { processMetrics: false } })
  await waitFor(() => app.citasLive.live.capturePolls > 0)
  t.match((await app.inject('/ready')).json(), { status: 'ready', change_capture: { stalled: false } })
  const locker = await db.pool.connect()
  t.teardown(() => locker.release())
  await locker.query('BEGIN')
  await locker.query('LOCK TABLE citas_live_cambios IN ACCESS EXCLUSIVE MODE')
  let ready: any
  await waitFor(async () => { ready = (await app.inject('/ready')).json(); return ready.status === 'degraded' })
  t.match(ready, { status: 'degraded', reasons: [/^change capture stalled: no drain of the change table for \d+ s$/], change_capture: { mode: 'table', role: 'leader', stalled: true } })
  t.ok(ready.change_capture.last_drain_age_ms > 1500, `last drain ${ready.change_capture.last_drain_age_ms} ms ago`)
  const age = Number(/^citas_live_change_capture_last_drain_age_seconds (\S+)$/m.exec(await app.citasLive.metrics.metrics())?.[1])
  t.ok(age > 1.5, `the metric says ${age} s`)
  t.equal(logged(/^change capture stalled/).length, 1, 'one warning')
  t.equal(logged(/^change capture stalled/)[0]?.level, 40)

  await locker.query('COMMIT')
  await waitFor(async () => (await app.inject('/ready')).json().status === 'ready')
  t.match((await app.inject('/ready')).json(), { change_capture: { stalled: false } })
  t.equal(logged(/^change capture resumed/).length, 1, 'and one line when it resumes')
  t.equal(logged(/^change capture stalled/).length, 1, 'still one warning')
})

t.test('postgres bus: a role that may LISTEN replays captured messages; each is refused and counted, and costs no query', async (t) => {
  const db = await testDatabase(t, { owner: true })
  await addNegocio(db.pool, 'n1')
  const { mallory } = await roles(t, db)
  const busSecret = randomBytes(24).toString('hex')
  const live = { busSecret }
  const a = await build(t, { database: db, live: { ...live, instanceId: 'a' } })
  await waitFor(() => a.app.citasLive.live.status().changeCapture.role === 'leader')
  const b = await build(t, { database: db, live: { ...live, instanceId: 'b' } })
  await waitFor(() => b.app.citasLive.live.status().bus.up)
  const { ws } = await listen(b.app)
  const c = await Client.open(`${ws}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
  await c.subscribe('n1')

  // The channel is named after the bus key, and no role can list the channels others LISTEN on:
  // this role has learned the name (a leaked key, or a look at a server's configuration).
  const BUS_CHANNEL = pgBusChannel(createBusCodec(busSecret))
  const m = await connect(t, mallory.url)
  const captured: string[] = []
  m.on('notification', (n) => { if (n.payload !== undefined) captured.push(n.payload) })
  await m.query(`LISTEN ${BUS_CHANNEL}`)
  // A notify on A and a direct write (A drains it): A computes both and publishes the figures.
  await addCita(db.pool, 'n1', new Date())
  const res = await a.app.inject({ method: 'POST', url: '/notify/cita', headers: { authorization: `Bearer ${serviceToken()}` }, payload: { negocio_id: 'n1', action: 'created' } })
  t.equal(res.statusCode, 200)
  await addCita(db.pool, 'n1', new Date())
  await waitFor(() => statsOf(c).at(-1) === 2)
  await waitFor(() => captured.some(p => p.includes('"snapshots"')))
  await waitFor(async () => { const q = b.app.citasLive.stats.queryCount; await new Promise(resolve => setTimeout(resolve, 200)); return b.app.citasLive.stats.queryCount === q })

  const queries = b.app.citasLive.stats.queryCount
  // A's messages: B skips its own echoes before anything else (its interest, announced again every
  // 10 s, may be among those captured on a slow run).
  const fromA = captured.filter(p => p.includes('{"origin":"a"'))
  // The old, fixed channel name reaches no instance.
  for (let i = 0; i < 50; i++) await m.query("SELECT pg_notify('citas_live_bus', $1)", [fromA[0]])
  const dropped = b.app.citasLive.live.busDropped.replayed
  const replays = 300
  for (let i = 0; i < replays; i++) await m.query('SELECT pg_notify($1, $2)', [BUS_CHANNEL, fromA[i % fromA.length]])
  await waitFor(() => b.app.citasLive.live.busDropped.replayed - dropped >= replays)
  t.equal(b.app.citasLive.live.busDropped.replayed - dropped, replays, `${replays} replays refused as replayed; the 50 on the old channel name never heard`)
  t.equal(b.app.citasLive.stats.queryCount, queries, 'none cost a stats query')
  t.match(await b.app.citasLive.metrics.metrics(), /citas_live_bus_messages_dropped_total\{reason="replayed"\} \d+/)

  // A message signed with the key but sent long ago (the bus secret is only the test's to use).
  const old = createBusCodec(busSecret, { now: () => Date.now() - 120_000 }).encode({ origin: 'a', changed: ['n1'] })
  await m.query('SELECT pg_notify($1, $2)', [BUS_CHANNEL, old])
  await waitFor(() => b.app.citasLive.live.busDropped.stale === 1)
  t.equal(b.app.citasLive.stats.queryCount, queries, 'nor the stale one')

  await addCita(db.pool, 'n1', new Date())
  await waitFor(() => statsOf(c).at(-1) === 3)
  t.pass('genuine changes still reach the subscribers of B')
})

t.test('redis bus: whoever may SUBSCRIBE replays captured messages; each is refused and counted, and costs no query', { skip: NO_REDIS }, async (t) => {
  const url = await redisUrl(t)
  const db = await testDatabase(t, { owner: true })
  await addNegocio(db.pool, 'n1')
  const busSecret = randomBytes(24).toString('hex')
  const live = { bus: 'redis' as const, redisUrl: url, busSecret, changeCapture: false }
  const a = await build(t, { database: db, live: { ...live, instanceId: 'a' } })
  const b = await build(t, { database: db, live: { ...live, instanceId: 'b' } })
  await waitFor(() => a.app.citasLive.live.status().bus.up && b.app.citasLive.live.status().bus.up)
  const { ws } = await listen(b.app)
  const c = await Client.open(`${ws}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
  await c.subscribe('n1')

  const channel = `citas-live:stats:${createBusCodec(busSecret).channelTag}`
  const spy = new Redis(url)
  const pub = new Redis(url)
  t.teardown(() => { spy.disconnect(); pub.disconnect() })
  const captured: string[] = []
  spy.on('message', (_ch: string, payload: string) => captured.push(payload))
  await spy.subscribe(channel)
  await addCita(db.pool, 'n1', new Date())
  await a.app.inject({ method: 'POST', url: '/notify/cita', headers: { authorization: `Bearer ${serviceToken()}` }, payload: { negocio_id: 'n1', action: 'created' } })
  await waitFor(() => statsOf(c).at(-1) === 1 && captured.length > 0)

  const queries = b.app.citasLive.stats.queryCount
  const replays = 300
  for (let i = 0; i < replays; i++) await pub.publish(channel, captured[0] as string)
  await waitFor(() => b.app.citasLive.live.busDropped.replayed >= replays)
  t.equal(b.app.citasLive.live.busDropped.replayed, replays, 'every replay refused as replayed')
  t.equal(b.app.citasLive.stats.queryCount, queries, 'none cost a stats query')
})

t.test('"*" from the change table starts at most one resync per interval, however often it comes', async (t) => {
  const db = await testDatabase(t, { owner: true })
  for (const id of ['n1', 'n2', 'n3']) await addNegocio(db.pool, id)
  const { app } = await build(t, { database: db })
  await waitFor(() => app.citasLive.live.capturePolls > 0)
  const { ws } = await listen(app)
  const c = await Client.open(`${ws}/ws?token=${sign({ negocios: ['n1', 'n2', 'n3'] })}`, t)
  for (const id of ['n1', 'n2', 'n3']) await c.subscribe(id)
  await waitFor(async () => { const q = app.citasLive.stats.queryCount; await new Promise(resolve => setTimeout(resolve, 300)); return app.citasLive.stats.queryCount === q })
  const starts = app.citasLive.live.starResyncs
  const queries = app.citasLive.stats.queryCount
  // A privileged role truncating citas over and over: each TRUNCATE records '*'.
  for (let i = 0; i < 20; i++) await db.pool.query('TRUNCATE citas')
  await waitFor(() => app.citasLive.live.starResyncs > starts)
  await waitFor(async () => { const q = app.citasLive.stats.queryCount; await new Promise(resolve => setTimeout(resolve, 300)); return app.citasLive.stats.queryCount === q })
  t.equal(app.citasLive.live.starResyncs - starts, 1, 'one resync for twenty')
  t.equal(app.citasLive.stats.queryCount - queries, 1, 'three channels, one statement')
})

t.test('trusted addresses are real: notifies without a token and the per-IP limit go by the socket, or by what a listed proxy says', async (t) => {
  const db = await testDatabase(t, { owner: true })
  await addNegocio(db.pool, 'n1')
  const notify = async (base: string, forwarded: string): Promise<number> => (await fetch(`${base}/notify/cita`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-forwarded-for': forwarded },
    body: JSON.stringify({ negocio_id: 'n1', action: 'created' })
  })).status

  // A host that trusts any proxy (Fastify's trustProxy: true): request.ip is whatever the client wrote.
  const host = Fastify({ trustProxy: true })
  t.teardown(() => host.close())
  await host.register(citasLive, {
    db: { connectionString: db.url },
    auth: { secret: SECRET, notifyTrustedNetworks: ['10.0.0.0/8'] },
    limits: { maxConnectionsPerIp: 1 },
    dashboard: false
  })
  const direct = await listen(host)
  t.equal(await notify(direct.http, '10.1.2.3'), 401, 'a client at 127.0.0.1 claiming 10.1.2.3 needs a token')
  t.equal(await notify(direct.http, '10.1.2.3, 1.2.3.4'), 401, 'whatever the header holds')
  const token = sign({ negocio_id: 'n1' })
  const first = await Client.open(`${direct.ws}/ws?token=${token}`, t, { headers: { 'x-forwarded-for': '10.0.0.1' } })
  t.match(await handshake(`${direct.ws}/ws?token=${token}`, { 'x-forwarded-for': '10.0.0.2' }), { status: 429 }, 'another X-Forwarded-For does not escape the per-IP limit')
  first.ws.terminate()

  // Behind listed proxies (here the test client is the proxy): the rightmost address they did not add.
  const { app } = await build(t, { database: db, auth: { notifyTrustedNetworks: ['10.0.0.0/8'] }, limits: { trustedProxies: ['127.0.0.1'] } })
  const proxied = await listen(app)
  t.equal(await notify(proxied.http, '10.1.2.3'), 200, 'the proxy says the caller is 10.1.2.3: trusted')
  t.equal(await notify(proxied.http, '10.1.2.3, 1.2.3.4'), 401, 'the client wrote 10.1.2.3, the proxy added 1.2.3.4: not trusted')
})
