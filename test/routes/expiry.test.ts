import t, { type Test } from 'tap'
import { addNegocio, build, Client, listen, sign } from '../helper.js'

async function setup (t: Test) {
  const built = await build(t, { expiry: { warningMs: 1500, sweepMs: 50 } })
  const { ws } = await listen(built.app)
  for (const id of ['n1', 'n2']) await addNegocio(built.db.pool, id)
  return { ...built, url: `${ws}/ws` }
}

/** An exp (unix seconds) `seconds` to `seconds + 1` from now: far enough that the 1.5 s notice comes after the setup. */
function expIn (seconds: number): number {
  return Math.ceil(Date.now() / 1000) + seconds
}

t.test('token_expiring before exp, then close 4001 at exp without a refresh', async (t) => {
  const { url } = await setup(t)
  const exp = expIn(3)
  const c = await Client.open(`${url}?token=${sign({ sub: 'u1', negocio_id: 'n1', exp })}`, t)
  let noticeAt = 0
  c.ws.on('message', (data) => { if (String(data).includes('token_expiring')) noticeAt = Date.now() })
  c.send({ type: 'subscribe', data: { channel: 'estadisticas:n1' } })
  const closed = await c.closed
  t.same(closed, { code: 4001, reason: 'token expired' })
  t.ok(Date.now() >= exp * 1000, 'not before exp')
  t.same(c.received.filter(m => m.type === 'token_expiring'), [{ type: 'token_expiring', data: { expires_at: exp } }], 'one notice, before the close')
  t.ok(noticeAt >= exp * 1000 - 1500, 'no earlier than warningMs before exp')
  t.match(c.received.filter(m => m.type !== 'token_expiring'), [{ type: 'subscribed' }, { type: 'stats', data: { negocio_id: 'n1' } }], 'the subscription worked until then')
})

t.test('refresh with a fresh token of the same user keeps the socket; lost channels get forbidden', async (t) => {
  const { url } = await setup(t)
  const exp = expIn(4)
  const c = await Client.open(`${url}?token=${sign({ sub: 'u1', negocios: ['n1', 'n2'], exp })}`, t)
  // Same exp, never refreshed: its 4001 shows the server has swept past that exp (one pass checks every socket).
  const witness = await Client.open(`${url}?token=${sign({ sub: 'u2', negocio_id: 'n1', exp })}`, t)
  await c.subscribe('n1')
  await c.subscribe('n2')
  t.match(await c.next(), { type: 'token_expiring', data: { expires_at: exp } })
  const fresh = sign({ sub: 'u1', negocios: ['n1'] }, { expiresIn: 60_000 })
  const freshExp = JSON.parse(Buffer.from(fresh.split('.')[1] as string, 'base64url').toString()).exp as number
  t.same(await c.request({ type: 'refresh', id: 'r1', data: { token: fresh } }), { type: 'refreshed', id: 'r1', data: { expires_at: freshExp } })
  t.same(await c.next(), {
    type: 'error', data: { code: 'forbidden', message: 'your token no longer allows estadisticas:n2', channel: 'estadisticas:n2' }
  })
  t.same(await witness.closed, { code: 4001, reason: 'token expired' }, 'the server has swept past the first token\'s exp')
  t.same(await c.request({ type: 'ping' }), { type: 'pong' }, 'still open after the old exp')
  t.same(await c.request({ type: 'subscribe', data: { channel: 'estadisticas:n2' } }),
    { type: 'error', data: { code: 'forbidden', message: 'your token does not allow estadisticas:n2' } }, 'the new rights apply')
})

t.test('refresh is refused for another user or a bad token; the old token stays in force', async (t) => {
  const { url } = await setup(t)
  const c = await Client.open(`${url}?token=${sign({ sub: 'u1', negocio_id: 'n1' }, { expiresIn: 60_000 })}`, t)
  t.same(await c.request({ type: 'refresh', id: 1, data: { token: sign({ sub: 'u2', negocio_id: 'n2' }) } }),
    { type: 'error', id: 1, data: { code: 'forbidden', message: 'the new token belongs to another user' } })
  t.same(await c.request({ type: 'refresh', id: 2, data: { token: sign({ sub: 'u1' }, { expiresIn: -1000 }) } }),
    { type: 'error', id: 2, data: { code: 'unauthorized', message: 'token expired' } })
  t.same(await c.request({ type: 'refresh', id: 3, data: { token: sign({ sub: 'u1' }, { secret: 'another-secret-0123456789' }) } }),
    { type: 'error', id: 3, data: { code: 'unauthorized', message: 'invalid token signature' } })
  t.same(await c.request({ type: 'refresh', id: 4, data: {} }),
    { type: 'error', id: 4, data: { code: 'bad_request', message: 'refresh needs data: {"token": "<a fresh token>"}' } })
  t.match(await c.subscribe('n1'), { type: 'stats' }, 'the original rights are intact')
})
