import t from 'tap'
import { Client, handshake, serve, sign } from '../helper.js'

// Limits and refreshes hold for tokens without a usable `sub`, and refresh frames carry any token
// the handshake accepts.
t.test('tokens without sub are counted under the rights they grant: leaving sub out does not escape the per-user limit', async (t) => {
  const { url } = await serve(t, { limits: { maxConnectionsPerUser: 3 } })
  // Different tokens (other claims, no sub, or a sub that is not a string) granting the same negocio.
  const tokens = [sign({ negocio_id: 'n1' }), sign({ negocio_id: 'n1', x: 1 }), sign({ negocios: ['n1'], sub: 42 })]
  for (const token of tokens) await Client.open(`${url}?token=${token}`, t)
  for (const token of [sign({ negocio_id: 'n1', x: 2 }), sign({ negocio_id: 'n1', sub: '' }), sign({ negocios: ['n1'], sub: { id: 1 } })]) {
    const refused = await handshake(`${url}?token=${token}`)
    t.equal(refused.status, 429, 'a fourth sub-less connection with the same rights is refused')
    t.match(refused.body, { code: 'limit', message: 'too many connections for this user' })
  }
  t.equal((await handshake(`${url}?token=${sign({ negocio_id: 'n2' })}`)).status, 101, 'other rights are another count')
  t.equal((await handshake(`${url}?token=${sign({ sub: 'u1', negocio_id: 'n1' })}`)).status, 101, 'a token with a sub is counted under it')
})

t.test('a refresh that cannot prove it is the same user is refused, and the connection keeps its rights', async (t) => {
  const { url } = await serve(t)
  const anonymous = await Client.open(`${url}?token=${sign({ negocio_id: 'n1' })}`, t)
  await anonymous.subscribe('n1')
  t.same(await anonymous.request({ type: 'refresh', id: 'r1', data: { token: sign({ negocio_id: 'n2' }) } }), {
    type: 'error', id: 'r1', data: { code: 'forbidden', message: 'a token without sub cannot be refreshed: reconnect with the new token' }
  }, 'sub-less to sub-less')
  t.same(await anonymous.request({ type: 'refresh', id: 'r2', data: { token: sign({ sub: 'u1', negocio_id: 'n2' }) } }), {
    type: 'error', id: 'r2', data: { code: 'forbidden', message: 'a token without sub cannot be refreshed: reconnect with the new token' }
  }, 'sub-less to a sub')
  const named = await Client.open(`${url}?token=${sign({ sub: 'u1', negocio_id: 'n1' })}`, t)
  t.match(await named.request({ type: 'refresh', id: 'r3', data: { token: sign({ negocio_id: 'n1' }) } }), {
    type: 'error', data: { code: 'forbidden' }
  }, 'a sub to sub-less')
  t.same(await named.request({ type: 'refresh', id: 'r4', data: { token: sign({ sub: 'u1', negocio_id: 'n1' }) } }), {
    type: 'refreshed', id: 'r4', data: { expires_at: null }
  }, 'the same sub refreshes')
  t.same(await anonymous.request({ type: 'subscribe', id: 's', data: { channel: 'estadisticas:n2' } }), {
    type: 'error', id: 's', data: { code: 'forbidden', message: 'your token does not allow estadisticas:n2' }
  }, 'the refused refresh granted nothing')
})

t.test('a refresh frame carries a token as long as the handshake accepts; other frames stay under maxPayload', async (t) => {
  const { url } = await serve(t, { maxPayload: 4096 })
  const long = sign({ sub: 'u1', negocio_id: 'n1', pad: 'x'.repeat(8700) })
  t.ok(long.length > 8700, `a ${long.length}-byte token`)
  const c = await Client.open(`${url}?token=${long}`, t)
  t.same(await c.request({ type: 'refresh', id: 'r', data: { token: long } }), { type: 'refreshed', id: 'r', data: { expires_at: null } })
  t.same(await c.request({ type: 'ping', id: 'p' }), { type: 'pong', id: 'p' }, 'still open')
  c.send({ type: 'ping', id: 'x'.repeat(5000) })
  t.same(await c.closed, { code: 1009, reason: 'message too big' }, 'any other message over 4 KiB closes with 1009')

  const binary = await Client.open(`${url}?token=${long}`, t)
  binary.ws.send(Buffer.alloc(5000))
  t.same(await binary.closed, { code: 1009, reason: 'message too big' }, 'a binary frame over 4 KiB too')
  const huge = await Client.open(`${url}?token=${long}`, t)
  huge.send({ type: 'refresh', data: { token: 'x'.repeat(40_000) } })
  t.equal((await huge.closed).code, 1009, 'a refresh longer than any token the handshake accepts is refused by size')
})
