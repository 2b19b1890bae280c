import t from 'tap'
import { addNegocio, Client, handshake, serve, serviceToken, sign, waitFor } from '../helper.js'

t.test('origin allow-list: another Origin gets 403 before the upgrade; listed and absent origins pass', async (t) => {
  const { url } = await serve(t, { limits: { allowedOrigins: ['https://app.example.com'] } }, ['n1'])
  const token = sign({ sub: 'u1', negocio_id: 'n1' })
  const evil = await handshake(`${url}?token=${token}`, { origin: 'https://evil.example.com' })
  t.equal(evil.status, 403)
  t.same(evil.body, { statusCode: 403, code: 'forbidden', error: 'Forbidden', message: 'origin not allowed' })
  t.equal((await handshake(url, { origin: 'https://evil.example.com' })).status, 403, 'checked before the token')
  t.equal((await handshake(`${url}?token=${token}`, { origin: 'https://app.example.com' })).status, 101)
  t.equal((await handshake(`${url}?token=${token}`)).status, 101, 'no Origin: not a browser page')
})

t.test('cross-origin token probe: a page of an allowed origin may read a refusal (CORS), other origins may not', async (t) => {
  const { http } = await serve(t, { limits: { allowedOrigins: ['https://app.example.com'] } }, ['n1'])
  const app = 'https://app.example.com'
  const ask = { 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' }

  const preflight = await fetch(`${http}/ws`, { method: 'OPTIONS', headers: { origin: app, ...ask } })
  t.equal(preflight.status, 204)
  t.equal(preflight.headers.get('access-control-allow-origin'), app)
  t.equal(preflight.headers.get('access-control-allow-methods'), 'GET')
  t.equal(preflight.headers.get('access-control-allow-headers'), 'authorization')
  t.equal(preflight.headers.get('access-control-max-age'), '600')
  t.match(preflight.headers.get('vary'), /Origin/)

  const refused = await fetch(`${http}/ws`, { headers: { origin: app, authorization: 'Bearer nope' } })
  t.equal(refused.status, 401)
  t.equal(refused.headers.get('access-control-allow-origin'), app)
  t.same(await refused.json(), { statusCode: 401, code: 'unauthorized', error: 'Unauthorized', message: 'malformed token' })

  const evil = 'https://evil.example.com'
  const evilPreflight = await fetch(`${http}/ws`, { method: 'OPTIONS', headers: { origin: evil, ...ask } })
  t.equal(evilPreflight.status, 403)
  t.equal(evilPreflight.headers.get('access-control-allow-origin'), null)
  const evilProbe = await fetch(`${http}/ws`, { headers: { origin: evil, authorization: 'Bearer nope' } })
  t.equal(evilProbe.status, 403)
  t.equal(evilProbe.headers.get('access-control-allow-origin'), null, 'another origin cannot read why')

  const server = await fetch(`${http}/ws`, { headers: { authorization: 'Bearer nope' } })
  t.equal(server.status, 401, 'no Origin: not a browser page, no CORS headers needed')
  t.equal(server.headers.get('access-control-allow-origin'), null)
})

t.test('no allow-list: any origin is accepted and a warning is logged once at start', async (t) => {
  const lines: string[] = []
  const Fastify = (await import('fastify')).default
  const { default: app } = await import('../../app.js')
  const { testDatabase, SECRET } = await import('../helper.js')
  const db = await testDatabase(t)
  const fastify = Fastify({ logger: { level: 'warn', stream: { write: (l: string) => { lines.push(l) } } } })
  t.teardown(() => fastify.close())
  await fastify.register(app, { db: { connectionString: db.url }, auth: { secret: SECRET } })
  await fastify.ready()
  const warnings = lines.filter(l => l.includes('allowed origins are not set'))
  t.equal(warnings.length, 1)
  const { ws } = await (await import('../helper.js')).listen(fastify)
  t.equal((await handshake(`${ws}/ws?token=${sign({ negocio_id: 'n1' })}`, { origin: 'https://anywhere.example' })).status, 101)
})

t.test('frames over maxPayload close with 1009; the bound is configurable', async (t) => {
  const { url } = await serve(t, { maxPayload: 1024 }, ['n1'])
  const c = await Client.open(`${url}?token=${sign({ negocio_id: 'n1' })}`, t)
  t.same(await c.request({ type: 'ping', id: 'x'.repeat(64) }), { type: 'pong', id: 'x'.repeat(64) })
  c.send({ type: 'ping', pad: 'x'.repeat(1100) })
  t.equal((await c.closed).code, 1009)
})

t.test('more subscriptions than allowed: error limit, the others keep working', async (t) => {
  const { url, db } = await serve(t, { limits: { maxSubscriptions: 3 } }, ['n1'])
  for (const id of ['n2', 'n3', 'n4']) await addNegocio(db.pool, id)
  const c = await Client.open(`${url}?token=${sign({ negocios: ['n1', 'n2', 'n3', 'n4'] })}`, t)
  for (const id of ['n1', 'n2', 'n3']) await c.subscribe(id)
  t.same(await c.request({ type: 'subscribe', id: 9, data: { channel: 'estadisticas:n4' } }),
    { type: 'error', id: 9, data: { code: 'limit', message: 'at most 3 subscriptions per connection' } })
  t.match(await c.request({ type: 'subscribe', data: { channel: 'estadisticas:n1' } }), { type: 'subscribed' }, 'resubscribing is not a new one')
  await c.next()
  await c.request({ type: 'unsubscribe', data: { channel: 'estadisticas:n1' } })
  t.match(await c.subscribe('n4'), { type: 'stats', data: { negocio_id: 'n4' } }, 'room again after an unsubscribe')
})

t.test('connections per user: 429 at the handshake; per IP when turned on', async (t) => {
  const { url, app } = await serve(t, { limits: { maxConnectionsPerUser: 2 } }, ['n1'])
  const token = sign({ sub: 'u1', negocio_id: 'n1' })
  const a = await Client.open(`${url}?token=${token}`, t)
  await Client.open(`${url}?token=${token}`, t)
  const third = await handshake(`${url}?token=${token}`)
  t.equal(third.status, 429)
  t.same(third.body, { statusCode: 429, code: 'limit', error: 'Too Many Requests', message: 'too many connections for this user' })
  t.equal((await handshake(`${url}?token=${sign({ sub: 'u2', negocio_id: 'n1' })}`)).status, 101, 'another user is not affected')
  a.ws.close()
  await waitFor(() => app.citasLive.limits.perUser.count('sub:u1') === 1) // the server has handled the close
  t.equal((await handshake(`${url}?token=${token}`)).status, 101, 'a closed connection frees its place')

  const ip = await serve(t, { limits: { maxConnectionsPerIp: 1, maxConnectionsPerUser: 0 } }, ['n1'])
  const first = await Client.open(`${ip.url}?token=${sign({ sub: 'x', negocio_id: 'n1' })}`, t)
  const res = await handshake(`${ip.url}?token=${sign({ sub: 'y', negocio_id: 'n1' })}`)
  t.equal(res.status, 429)
  t.match(res.body, { code: 'limit', message: 'too many connections for this IP address' })
  first.ws.close()
  await waitFor(() => ip.app.citasLive.limits.perIp.count('127.0.0.1') === 0) // the server has handled the close
  t.equal((await handshake(`${ip.url}?token=${sign({ sub: 'y', negocio_id: 'n1' })}`)).status, 101, 'a closed connection frees its IP place')
})

t.test('message rate: over the bucket one rate_limited error, sustained abuse closes with 1008', async (t) => {
  // One token per 1,000 s: none comes back during the test, however slow the machine.
  const { url } = await serve(t, { limits: { messageRate: 0.001, messageBurst: 5, maxRefusedMessages: 20 } }, ['n1'])
  const c = await Client.open(`${url}?token=${sign({ negocio_id: 'n1' })}`, t)
  for (let i = 0; i < 5; i++) c.send({ type: 'ping', id: i })
  for (let i = 0; i < 5; i++) t.same(await c.next(), { type: 'pong', id: i })
  c.send({ type: 'ping', id: 5 })
  c.send({ type: 'ping', id: 6 })
  const limited = { type: 'error', data: { code: 'rate_limited', message: 'too many messages: slow down' } }
  t.same(await c.next(), limited)
  for (let i = 0; i < 30; i++) c.send({ type: 'ping' })
  t.same(await c.closed, { code: 1008, reason: 'message rate exceeded' })
  t.same(c.received.slice(5), [limited], 'one error for the whole run of refusals, not one per message')
})

t.test('/notify/cita is rate limited per caller with 429 rate_limited', async (t) => {
  const { http } = await serve(t, { limits: { notifyMax: 3, notifyWindowMs: 60_000 } }, ['n1'])
  const call = async (token: string) => await fetch(`${http}/notify/cita`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ negocio_id: 'n1', action: 'created' })
  })
  const a = serviceToken()
  for (let i = 0; i < 3; i++) t.equal((await call(a)).status, 200)
  const over = await call(a)
  t.equal(over.status, 429)
  t.ok(over.headers.get('retry-after'), 'Retry-After is set')
  t.match(await over.json(), { statusCode: 429, code: 'rate_limited', error: 'Too Many Requests', message: /rate limit exceeded, retry in/ })
  t.equal((await call(sign({ sub: 'other-service', role: 'service' }))).status, 200, 'another caller has its own budget')
  const anonymous = await call('nope')
  t.equal(anonymous.status, 401, 'unauthenticated calls are refused before the limit')
})

t.test('/notify/cita refuses bodies over 16 KiB with 413', async (t) => {
  const { http } = await serve(t, {}, ['n1'])
  const res = await fetch(`${http}/notify/cita`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${serviceToken()}` },
    body: JSON.stringify({ negocio_id: 'n1', action: 'created', pad: 'x'.repeat(20_000) })
  })
  t.equal(res.status, 413)
})
