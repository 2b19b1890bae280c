import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import fastifyJwt from '@fastify/jwt'
import fastifyPostgres from '@fastify/postgres'
import fastifyWebsocket from '@fastify/websocket'
import WebSocket from 'ws'
import citasLive, { type CitasLive } from '../../app.js'
import { forcePublic, resetGuards } from '../../services/adapters/guard.js'
import { addCita, addNegocio, Client, handshake, listen, sign, testDatabase, type TestDatabase } from '../helper.js'

declare module 'fastify' {
  interface FastifyInstance {
    live1: CitasLive
    live2: CitasLive
  }
}

const HOST_SECRET = 'the-host-apps-own-secret-0123456789'
const SECRET_1 = 'citas-live-one-secret-0123456789abcdef'
const SECRET_2 = 'citas-live-two-secret-0123456789abcdef'

/**
 * A host app as people write them: its own JWT (another secret), its own pool (another database),
 * its own @fastify/websocket with a subprotocol of its own and a socket route, and decorators named
 * like citas-live's parts. citas-live goes in twice, before or after those, with its own databases
 * and secrets.
 */
async function hostApp (t: Test, order: 'citas-live first' | 'citas-live last'): Promise<{ host: FastifyInstance, dbs: [TestDatabase, TestDatabase] }> {
  const hostDb = await testDatabase(t)
  const dbs: [TestDatabase, TestDatabase] = [await testDatabase(t), await testDatabase(t)]
  const host = Fastify({ logger: false })
  t.teardown(() => host.close())
  const hostParts = async (): Promise<void> => {
    await host.register(fastifyJwt, { secret: HOST_SECRET })
    await host.register(fastifyPostgres, { connectionString: hostDb.url })
    await host.register(fastifyWebsocket, {
      options: { handleProtocols: (protocols) => (protocols.has('host-v1') ? 'host-v1' : false) }
    })
    for (const name of ['hub', 'stats', 'live', 'metrics']) host.decorate(name, { owner: 'host' })
    await host.register(async (api) => {
      api.get('/api/me', async (request) => { await request.jwtVerify(); return request.user })
      api.get('/api/db', async () => (await host.pg.query('SELECT current_database() AS db')).rows[0])
      api.get('/api/socket', { websocket: true }, (socket) => { socket.on('message', (m) => socket.send(`host:${m.toString()}`)) })
    })
  }
  const citas = async (): Promise<void> => {
    await host.register(citasLive, { prefix: '/live', decorator: 'live1', db: { connectionString: dbs[0].url }, auth: { secret: SECRET_1 }, maxPayload: 4096, dashboard: false })
    await host.register(citasLive, { prefix: '/live2', decorator: 'live2', db: { connectionString: dbs[1].url }, auth: { secret: SECRET_2 }, maxPayload: 4096, dashboard: false })
  }
  if (order === 'citas-live first') {
    await citas()
    await hostParts()
  } else {
    await hostParts()
    await citas()
  }
  await host.ready()
  return { host, dbs }
}

for (const order of ['citas-live first', 'citas-live last'] as const) {
  t.test(`a host app with its own JWT, pool, WebSocket and decorators; citas-live twice, ${order}`, async (t) => {
    const { host, dbs } = await hostApp(t, order)
    const { ws, http } = await listen(host)
    await addNegocio(dbs[0].pool, 'n1')
    await addCita(dbs[0].pool, 'n1', new Date())
    await addNegocio(dbs[1].pool, 'n1')

    // The host's own parts are untouched.
    const own = host as unknown as Record<string, unknown>
    for (const name of ['hub', 'stats', 'live', 'metrics']) t.same(own[name], { owner: 'host' }, `the host keeps its own ${name}`)
    const me = await fetch(`${http}/api/me`, { headers: { authorization: `Bearer ${host.jwt.sign({ sub: 'host-user' })}` } })
    t.match(await me.json(), { sub: 'host-user' }, 'the host verifies its own tokens with its own secret')
    t.match(await (await fetch(`${http}/api/db`)).json(), { db: /^citas_test_/ }, 'and queries its own database')
    const hostSocket = new WebSocket(`${ws}/api/socket`, ['host-v1'])
    t.teardown(() => hostSocket.terminate())
    await new Promise((resolve, reject) => { hostSocket.once('open', resolve); hostSocket.once('error', reject) })
    t.equal(hostSocket.protocol, 'host-v1', 'the host\'s socket keeps its subprotocol')
    hostSocket.send('hi')
    t.equal((await new Promise<WebSocket.RawData>(resolve => hostSocket.once('message', resolve))).toString(), 'host:hi')

    // Each citas-live with its own database and its own tokens.
    const one = await Client.open(`${ws}/live/ws?token=${sign({ negocio_id: 'n1' }, { secret: SECRET_1 })}`, t)
    t.match(await one.subscribe('n1'), { type: 'stats', data: { total_citas: 1 } }, '/live reads its database')
    const two = await Client.open(`${ws}/live2/ws?token=${sign({ negocio_id: 'n1' }, { secret: SECRET_2 })}`, t)
    t.match(await two.subscribe('n1'), { type: 'stats', data: { total_citas: 0 } }, '/live2 reads another')
    t.match(await handshake(`${ws}/live/ws?token=${sign({ negocio_id: 'n1' }, { secret: SECRET_2 })}`), { status: 401 }, 'a token of one is refused by the other')
    t.match(await handshake(`${ws}/live2/ws?token=${sign({ negocio_id: 'n1' }, { secret: SECRET_1 })}`), { status: 401 })
    t.match(await handshake(`${ws}/live/ws?token=${host.jwt.sign({ negocio_id: 'n1' })}`), { status: 401 }, 'and so is the host\'s')
    t.not(host.live1, host.live2, 'each registration has its own parts')
    t.equal(host.live1.hub.connectionCount, 1)

    // Browsers send the token as a subprotocol: on both citas-live paths, whatever the host's socket does.
    for (const [path, secret] of [['/live/ws', SECRET_1], ['/live2/ws', SECRET_2]] as const) {
      const browser = new WebSocket(`${ws}${path}`, ['bearer', sign({ negocio_id: 'n1' }, { secret })])
      t.teardown(() => browser.terminate())
      await new Promise((resolve, reject) => { browser.once('open', resolve); browser.once('error', reject) })
      t.equal(browser.protocol, 'bearer', `${path} selects bearer`)

      // The 4 KiB frame limit holds on each (a refresh frame too, past the refresh limit).
      for (const frame of ['x'.repeat(100_000), JSON.stringify({ type: 'refresh', token: 'x'.repeat(100_000) })]) {
        const c = await Client.open(`${ws}${path}?token=${sign({ negocio_id: 'n1' }, { secret })}`, t)
        c.send(frame)
        t.equal((await c.closed).code, 1009, `${path}: a 100 KB frame closes with 1009`)
      }
    }
  })
}

t.test('a host WebSocket server that cannot take citas-live\'s frames fails at boot, saying why', async (t) => {
  const db = await testDatabase(t)
  const host = Fastify({ logger: false })
  t.teardown(() => host.close())
  await host.register(fastifyWebsocket, { options: { maxPayload: 1024 } })
  await t.rejects(async () => {
    await host.register(citasLive, { db: { connectionString: db.url }, auth: { secret: SECRET_1 } })
    await host.ready()
  }, /the host's @fastify\/websocket accepts frames up to 1024 bytes, but citas-live's \/ws must accept \d+/)
})

t.test('a host WebSocket server whose settings cannot be read (another ws) boots with one warning, and citas-live\'s /ws works', async (t) => {
  resetGuards()
  t.teardown(resetGuards)
  forcePublic(['ws-server-options'])
  const db = await testDatabase(t)
  await addNegocio(db.pool, 'n1')
  const warnings: string[] = []
  const host = Fastify({ logger: { level: 'warn', stream: { write: (line: string) => { warnings.push(JSON.parse(line).msg) } } } })
  t.teardown(() => host.close())
  await host.register(fastifyWebsocket, { options: { maxPayload: 1024 } })
  await host.register(citasLive, { prefix: '/live', db: { connectionString: db.url }, auth: { secret: SECRET_1 } })
  const { ws } = await listen(host)
  t.match(warnings.filter((m) => /ws-server-options/.test(m)), [/maxPayload of the host's WebSocket server is not checked/])
  const token = sign({ negocio_id: 'n1' }, { secret: SECRET_1 })
  const c = await Client.open(`${ws}/live/ws`, t, {}, ['bearer', token])
  t.equal(c.ws.protocol, 'bearer', 'the bearer subprotocol is answered without touching the host server\'s settings')
  t.match(await c.subscribe('n1'), { type: 'stats', data: { negocio_id: 'n1' } })
})

t.test('citas-live adds nothing to the host unless asked', async (t) => {
  const db = await testDatabase(t)
  const host = Fastify({ logger: false })
  t.teardown(() => host.close())
  const before = new Set(Object.keys(host))
  await host.register(citasLive, { db: { connectionString: db.url }, auth: { secret: SECRET_1 }, dashboard: false })
  await host.ready()
  const added = Object.keys(host).filter(k => !before.has(k))
  t.same(added, [], 'no decorator on the host')
  t.notOk(host.hasRequestDecorator('user'), 'no request decorator either')
  t.notOk(host.hasDecorator('jwt'))
  // A host may then register its own @fastify/jwt and decorate `user` itself.
  const later = Fastify({ logger: false })
  t.teardown(() => later.close())
  await later.register(citasLive, { db: { connectionString: db.url }, auth: { secret: SECRET_1 }, dashboard: false })
  await later.register(fastifyJwt, { secret: HOST_SECRET })
  await later.ready()
  t.pass('a host @fastify/jwt registered after citas-live boots')
})
