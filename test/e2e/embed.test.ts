import t from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import fastifyJwt from '@fastify/jwt'
import fastifyPostgres from '@fastify/postgres'
import pg from 'pg'
import citasLive from '../../app.js'
import { forcePublic, resetGuards } from '../../services/adapters/guard.js'
import { addCita, addNegocio, Client, listen, SECRET, serviceToken, testDatabase, waitFor } from '../helper.js'

t.test('a host app with its own JWT and pg pool mounts citas-live under a prefix', async (t) => {
  const db = await testDatabase(t)
  const host = Fastify({ logger: false })
  t.teardown(() => host.close())
  await host.register(fastifyJwt, { secret: SECRET })
  await host.register(fastifyPostgres, { connectionString: db.url })
  host.get('/api/hello', async () => ({ hello: 'world' }))
  host.get('/api/boom', async () => { throw Object.assign(new Error('host error'), { statusCode: 418 }) })
  // No connection string: the plugin reuses the host's pool. Tokens are verified by the host's own
  // @fastify/jwt, whose secret citas-live cannot read, so the bus gets a key of its own.
  await host.register(citasLive, { prefix: '/live', decorator: 'citasLive', db: {}, auth: { verify: (token) => host.jwt.verify(token) }, live: { busSecret: `${SECRET}-bus` } })
  await host.ready()
  t.equal(host.citasLive.pool, host.pg.pool, 'shares the host pool')

  const { ws } = await listen(host)
  await addNegocio(db.pool, 'n1')
  await addCita(db.pool, 'n1', new Date(), 'atendida')

  t.same((await host.inject('/live/health')).json(), { status: 'ok' })
  t.equal((await host.inject('/live/ready')).statusCode, 200)
  t.equal((await host.inject('/health')).statusCode, 404, 'nothing outside the prefix')
  t.same((await host.inject('/api/hello')).json(), { hello: 'world' }, 'host routes untouched')
  t.equal((await host.inject('/api/boom')).statusCode, 418, 'the host keeps its own error handling')

  // Tokens the host signs with its own @fastify/jwt are the ones citas-live accepts.
  const c = await Client.open(`${ws}/live/ws?token=${host.jwt.sign({ negocio_id: 'n1' })}`, t)
  t.match(await c.subscribe('n1'), { type: 'stats', data: { negocio_id: 'n1', total_citas: 1, citas_completadas: 1 } })
  t.same(await c.request({ type: 'ping', id: 1 }), { type: 'pong', id: 1 })
  t.match(await c.request({ type: 'subscribe', data: { channel: 'estadisticas:n2' } }), { data: { code: 'forbidden' } })

  await addCita(db.pool, 'n1', new Date(), 'cancelada')
  const res = await host.inject({
    method: 'POST',
    url: '/live/notify/cita',
    headers: { authorization: `Bearer ${serviceToken()}` },
    payload: { negocio_id: 'n1', action: 'status_changed' }
  })
  t.equal(res.statusCode, 200)
  t.match(await c.next(), { type: 'stats', data: { total_citas: 2, citas_canceladas: 1 } })
  t.match((await host.inject({ method: 'POST', url: '/live/notify/cita', payload: {} })).json(), { statusCode: 401, code: 'unauthorized' })

  // The host can push from its own code through the one decorator it asked for.
  t.type(host.citasLive.hub.publish, 'function')
})

t.test('misconfiguration fails at boot with a clear message', async (t) => {
  const noDb = Fastify({ logger: false })
  t.teardown(() => noDb.close())
  await t.rejects(async () => { await noDb.register(citasLive, { db: {}, auth: { secret: SECRET } }); await noDb.ready() }, /pass `connectionString` or `pool`/)

  const noAuth = Fastify({ logger: false })
  t.teardown(() => noAuth.close())
  await t.rejects(async () => { await noAuth.register(citasLive, { db: { connectionString: 'postgres://x@127.0.0.1/x' }, auth: {} }); await noAuth.ready() }, /pass `secret`/)

  // With a verifier of the host's, citas-live has no secret to sign the bus with.
  const noBusKey = Fastify({ logger: false })
  t.teardown(() => noBusKey.close())
  await noBusKey.register(fastifyJwt, { secret: SECRET })
  await t.rejects(async () => { await noBusKey.register(citasLive, { db: { connectionString: 'postgres://x@127.0.0.1/x' }, auth: { verify: (token) => noBusKey.jwt.verify(token) } }); await noBusKey.ready() }, /the postgres bus signs its messages: pass busSecret/)

  const shortSecret = Fastify({ logger: false })
  t.teardown(() => shortSecret.close())
  await t.rejects(async () => { await shortSecret.register(citasLive, { db: { connectionString: 'postgres://x@127.0.0.1/x' }, auth: { secret: 'short' } }); await shortSecret.ready() }, /citas-live auth plugin: invalid option secret: Expected string length greater or equal to 16/)

  // Every option is checked against its plugin's schema, with the plugin and the option named.
  const bad: Array<[Record<string, unknown>, RegExp]> = [
    [{ live: { coalesceMs: -1 } }, /^citas-live live plugin: invalid option coalesceMs: Expected integer to be greater or equal to 0$/],
    [{ maxPayload: 10 }, /^citas-live app plugin: invalid option maxPayload: /],
    [{ hub: { heartbeatMS: 5 } }, /^citas-live hub plugin: unknown option heartbeatMS$/],
    [{ auth: { secret: SECRET, claims: { role: 'has space' } } }, /^citas-live auth plugin: invalid option claims.role: /],
    [{ limits: { messageRate: 0 } }, /^citas-live limits plugin: invalid option messageRate: /],
    [{ live: { bus: 'kafka' } }, /^citas-live live plugin: invalid option bus: /]
  ]
  for (const [opts, message] of bad) {
    const app = Fastify({ logger: false })
    t.teardown(() => app.close())
    await t.rejects(async () => { await app.register(citasLive, { db: { connectionString: 'postgres://x@127.0.0.1/x' }, auth: { secret: SECRET }, ...opts }); await app.ready() }, message, JSON.stringify(opts))
  }

  // Every route plugin says what it needs: one registered without it fails at boot, naming it.
  for (const [file, needs] of [['ws', '@fastify/websocket'], ['sse', 'citas-auth'], ['notify', 'citas-auth'], ['health', 'citas-db-monitor'], ['metrics', 'citas-metrics']] as const) {
    const { default: route } = await import(`../../routes/${file}.js`) as { default: (f: FastifyInstance) => Promise<void> }
    const bare = Fastify({ logger: false })
    t.teardown(() => bare.close())
    await t.rejects(async () => { await bare.register(route); await bare.ready() }, new RegExp(`dependency '${needs}' of plugin 'citas-${file === 'metrics' ? 'metrics-route' : file}' is not registered`), `routes/${file}.ts`)
  }

  const badZone = Fastify({ logger: false })
  t.teardown(() => badZone.close())
  await t.rejects(async () => { await badZone.register(citasLive, { db: { connectionString: 'postgres://x@127.0.0.1/x' }, auth: { secret: SECRET }, stats: { timezone: 'Mars/Olympus' } }); await badZone.ready() }, /not an IANA time zone/)
})

t.test('the dedicated session copies the settings of citas-live\'s own pool, or of the host\'s pool through the pg-pool adapter', async (t) => {
  const db = await testDatabase(t)
  const own = Fastify({ logger: false })
  t.teardown(() => own.close())
  await own.register(citasLive, { decorator: 'citasLive', db: { connectionString: db.url }, auth: { secret: SECRET } })
  await own.ready()
  t.match(own.citasLive.poolConfig, { connectionString: db.url, application_name: 'citas-live' }, 'the settings it built its pool from')
  await waitFor(() => own.citasLive.live.status().bus.up)

  const hostPool = new pg.Pool({ connectionString: db.url, max: 2 })
  hostPool.on('error', () => {}) // ended, it may still be closing when the database is dropped
  t.teardown(async () => await hostPool.end())
  const host = Fastify({ logger: false })
  t.teardown(() => host.close())
  await host.register(citasLive, { decorator: 'citasLive', db: { pool: hostPool }, auth: { secret: SECRET } })
  await host.ready()
  t.equal(host.citasLive.poolConfig, undefined)
  await waitFor(() => host.citasLive.live.status().bus.up)
  t.pass('the session connected with the host pool\'s settings')

  // A host pool whose settings cannot be read (another pg, simulated): the boot asks for live.session...
  resetGuards()
  t.teardown(resetGuards)
  forcePublic(['pg-pool-settings'])
  const blind = Fastify({ logger: false })
  t.teardown(() => blind.close())
  await t.rejects(async () => { await blind.register(citasLive, { db: { pool: hostPool }, auth: { secret: SECRET } }); await blind.ready() }, /pass live\.session/)
  // ...and boots with it.
  const told = Fastify({ logger: false })
  t.teardown(() => told.close())
  await told.register(citasLive, { decorator: 'citasLive', db: { pool: hostPool }, auth: { secret: SECRET }, live: { session: db.url } })
  await told.ready()
  await waitFor(() => told.citasLive.live.status().bus.up)
})
