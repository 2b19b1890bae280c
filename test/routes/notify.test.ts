import t, { type Test } from 'tap'
import Fastify from 'fastify'
import citasLive from '../../app.js'
import { addCita, addNegocio, build, Client, listen, SECRET, serviceToken, sign, type Message } from '../helper.js'

async function setup (t: Test) {
  // Without change capture, only /notify/cita pushes: these tests are about that path alone.
  const built = await build(t, { live: { changeCapture: false } })
  const { ws } = await listen(built.app)
  await addNegocio(built.db.pool, 'n1')
  await addNegocio(built.db.pool, 'n2')
  const notify = async (body: unknown, token: string | null = serviceToken()) => await built.app.inject({
    method: 'POST',
    url: '/notify/cita',
    headers: { 'content-type': 'application/json', ...(token === null ? {} : { authorization: `Bearer ${token}` }) },
    payload: typeof body === 'string' ? body : JSON.stringify(body)
  })
  return { ...built, url: `${ws}/ws`, notify }
}

t.test('200: the new stats reach every subscriber of the channel before the reply', async (t) => {
  const { url, db, notify } = await setup(t)
  const a = await Client.open(`${url}?token=${sign({ negocio_id: 'n1' })}`, t)
  const b = await Client.open(`${url}?token=${sign({ negocios: ['n1', 'n2'] })}`, t)
  const other = await Client.open(`${url}?token=${sign({ negocio_id: 'n2' })}`, t)
  t.match(await a.subscribe('n1'), { data: { total_citas: 0 } })
  await b.subscribe('n1')
  await other.subscribe('n2')

  await addCita(db.pool, 'n1', new Date(), 'atendida')
  await addCita(db.pool, 'n1', new Date(Date.now() - 86400_000 * 2), 'cancelada')
  const res = await notify({ negocio_id: 'n1', action: 'created', cita_id: 77 })
  t.equal(res.statusCode, 200)
  const body = res.json()
  t.match(body, {
    ok: true,
    negocio_id: 'n1',
    action: 'created',
    delivered: 2,
    stats: { negocio_id: 'n1', citas_hoy: 1, total_citas: 2, citas_completadas: 1, citas_canceladas: 1 }
  })
  t.notOk('cita_id' in body, 'extra fields are ignored, not echoed')
  const expected = { type: 'stats', data: body.stats }
  t.same(await a.next(), expected)
  t.same(await b.next(), expected)
  // Every push is written before the reply, so anything for `other` would come before this pong.
  t.same(await other.request({ type: 'ping' }), { type: 'pong' }, 'subscribers of another negocio get nothing')

  // Notifies that change nothing answer the current figures and push nothing: a subscriber never
  // gets the same figures twice in a row.
  for (const action of ['updated', 'deleted', 'status_changed']) {
    const r = await notify({ negocio_id: 'n1', action })
    t.equal(r.statusCode, 200, action)
    t.match(r.json(), { delivered: 0, bus: 'sent', stats: { total_citas: 2, citas_completadas: 1 } })
  }
  t.same(await a.request({ type: 'ping' }), { type: 'pong' }, 'unchanged figures are not pushed again')
  t.equal(a.received.filter(m => m.type === 'stats').length, 2, 'the subscribe and the one change')

  // The next real change is pushed.
  await addCita(db.pool, 'n1', new Date(), 'cancelada')
  const r = await notify({ negocio_id: 'n1', action: 'status_changed' })
  t.match(r.json(), { delivered: 2, stats: { total_citas: 3, citas_canceladas: 2 } })
  t.same(await a.next(), { type: 'stats', data: r.json().stats })
})

t.test('400 names the bad field', async (t) => {
  const { notify } = await setup(t)
  const cases: Array<[unknown, RegExp]> = [
    [{ action: 'created' }, /negocio_id/],
    [{ negocio_id: 'n1' }, /action/],
    [{ negocio_id: 'n1', action: 'exploded' }, /action/],
    [{ negocio_id: 'bad id!', action: 'created' }, /negocio_id/],
    [{ negocio_id: { id: 'n1' }, action: 'created' }, /negocio_id/],
    [{ negocio_id: null, action: 'created' }, /negocio_id/],
    [{ negocio_id: 'x'.repeat(65), action: 'created' }, /negocio_id/]
  ]
  for (const [body, field] of cases) {
    const res = await notify(body)
    t.equal(res.statusCode, 400, JSON.stringify(body))
    t.match(res.json(), { statusCode: 400, code: 'bad_request', message: field }, JSON.stringify(body))
  }
  const notJson = await notify('{"negocio_id":')
  t.equal(notJson.statusCode, 400)
  t.match(notJson.json(), { code: 'bad_request' })
  // docs/notify.md's example, word for word.
  t.same((await notify({ negocio_id: 'n1', action: 'exploded' })).json(),
    { statusCode: 400, code: 'bad_request', error: 'Bad Request', message: 'body/action must be equal to one of the allowed values' })
})

t.test('404 for a negocio that does not exist', async (t) => {
  const { notify } = await setup(t)
  const res = await notify({ negocio_id: 'ghost', action: 'created' })
  t.equal(res.statusCode, 404)
  t.match(res.json(), { code: 'not_found', message: 'negocio ghost does not exist' })
})

t.test('401 without a valid service token, 403 with another role', async (t) => {
  const { notify, app } = await setup(t)
  const body = { negocio_id: 'n1', action: 'created' }
  t.match((await notify(body, null)).json(), { statusCode: 401, code: 'unauthorized', message: 'missing token' })
  t.match((await notify(body, sign({ role: 'service' }, { secret: 'some-other-secret-123456' }))).json(), { statusCode: 401, message: /signature/ })
  t.match((await notify(body, sign({ role: 'service' }, { expiresIn: -5000 }))).json(), { statusCode: 401, message: 'token expired' })
  const basic = await app.inject({ method: 'POST', url: '/notify/cita', headers: { authorization: 'Basic dXNlcjpwYXNz' }, payload: body })
  t.equal(basic.statusCode, 401)
  const viaQuery = await app.inject({ method: 'POST', url: `/notify/cita?token=${serviceToken()}`, payload: body })
  t.equal(viaQuery.statusCode, 401, 'the service token is not taken from the query string')

  const user = await notify(body, sign({ negocio_id: 'n1' }))
  t.equal(user.statusCode, 403)
  t.match(user.json(), { code: 'forbidden', message: /role "service"/ })
  t.equal((await notify({ bad: true }, null)).statusCode, 401, 'authentication comes before validation')
})

t.test('500 when the database is down; sockets stay up; it recovers', async (t) => {
  const { url, db, notify } = await setup(t)
  const c = await Client.open(`${url}?token=${sign({ negocio_id: 'n1' })}`, t)
  await c.subscribe('n1')

  await db.setDown(true)
  const res = await notify({ negocio_id: 'n1', action: 'created' })
  t.equal(res.statusCode, 503)
  t.same(res.json(), { statusCode: 503, code: 'unavailable', error: 'Service Unavailable', message: 'statistics are unavailable right now' })
  t.same(await c.request({ type: 'ping' }), { type: 'pong' }, 'the WebSocket side stays up')

  await db.setDown(false)
  await addCita(db.pool, 'n1', new Date())
  const ok = await notify({ negocio_id: 'n1', action: 'created' })
  t.equal(ok.statusCode, 200)
  t.match(ok.json(), { stats: { total_citas: 1 } })
  // The monitor's resync after the outage also pushes, before or after this notify's push, with 0 or
  // already 1: wait for the push with the new figures, not for the next message.
  const before: Message[] = []
  const pushed = await c.nextMatching((m) => {
    if (m.type === 'stats' && m.data?.total_citas === 1) return true
    before.push(m)
    return false
  })
  t.match(pushed, { type: 'stats', data: { negocio_id: 'n1', total_citas: 1, citas_hoy: 1 } })
  t.ok(before.every(m => m.type === 'stats' && m.data?.total_citas === 0), `only the figures from before the write come first: ${JSON.stringify(before)}`)
})

t.test('trusted networks: the old REST API calls notify without a token, only from there', async (t) => {
  const trusted = await build(t, { live: { changeCapture: false }, auth: { secret: SECRET, notifyTrustedNetworks: ['10.0.0.0/8', '127.0.0.0/8'] } })
  await addNegocio(trusted.db.pool, 'n1')
  const { http } = await listen(trusted.app)
  const body = JSON.stringify({ negocio_id: 'n1', action: 'created' })
  const post = async (url: string, headers: Record<string, string> = {}) =>
    await fetch(`${url}/notify/cita`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body })
  const res = await post(http)
  t.equal(res.status, 200, 'no token, from a trusted network (loopback, over a real socket)')
  t.match(await res.json(), { ok: true, negocio_id: 'n1', stats: { total_citas: 0 } })
  t.equal((await post(http, { authorization: 'Bearer nonsense' })).status, 401, 'a token that comes along is still checked')
  t.equal((await post(http, { authorization: `Bearer ${sign({ sub: 'u', negocio_id: 'n1' })}` })).status, 403, 'and must be a service token')

  const other = await build(t, { live: { changeCapture: false }, auth: { secret: SECRET, notifyTrustedNetworks: ['10.0.0.0/8'] } })
  await addNegocio(other.db.pool, 'n1')
  const { http: otherHttp } = await listen(other.app)
  const refused = await post(otherHttp)
  t.equal(refused.status, 401, 'from anywhere else the service token stays required')
  t.match(await refused.json(), { code: 'unauthorized', message: 'missing token' })

  const off = await build(t, { live: { changeCapture: false } })
  const { http: offHttp } = await listen(off.app)
  t.equal((await post(offHttp)).status, 401, 'off by default')

  const bad = Fastify({ logger: false })
  t.teardown(() => bad.close())
  await t.rejects(async () => {
    await bad.register(citasLive, { db: { connectionString: 'postgres://x@127.0.0.1/x' }, auth: { secret: SECRET, notifyTrustedNetworks: ['10.0.0.0/33'] } })
    await bad.ready()
  }, /^citas-live auth plugin: invalid option notifyTrustedNetworks: "10.0.0.0\/33" is not an IP address or a CIDR/)
})
