import t from 'tap'
import { addCita, Client, serve, serviceToken, sign } from '../helper.js'

// A negocio deleted while dashboards watch it: they are told, not left with its last figures.
const gone = { type: 'error', data: { code: 'not_found', message: 'estadisticas:n1 no longer exists', channel: 'estadisticas:n1' } }

t.test('change capture: deleting a watched negocio tells its subscribers and drops the subscription', async (t) => {
  const { app, db, url } = await serve(t, {}, ['n1', 'n2'])
  await addCita(db.pool, 'n1', new Date())
  const c = await Client.open(`${url}?token=${sign({ sub: 'u1', negocios: ['n1', 'n2'] })}`, t)
  t.match(await c.subscribe('n1'), { type: 'stats', data: { total_citas: 1 } })
  t.match(await c.subscribe('n2'), { type: 'stats', data: { total_citas: 0 } })
  await db.pool.query("DELETE FROM negocios WHERE id = 'n1'") // its citas go with it (ON DELETE CASCADE)
  t.same(await c.nextMatching(m => m.type === 'error'), gone)
  t.equal(app.citasLive.hub.subscriberCount('estadisticas:n1'), 0, 'the subscription is gone')
  t.equal(app.citasLive.hub.subscriberCount('estadisticas:n2'), 1, 'the other one stays')
  t.same(await c.request({ type: 'ping', id: 'p' }), { type: 'pong', id: 'p' }, 'the connection stays open')
  t.notOk(c.received.some(m => m.type === 'stats' && m.data.negocio_id === 'n1' && m.data.total_citas === 0), 'no made-up zero figures for it')
})

t.test('without change capture: the notify about a deleted negocio answers 404 and tells its subscribers', async (t) => {
  const { app, db, url, http } = await serve(t, { live: { changeCapture: false } }, ['n1'])
  const c = await Client.open(`${url}?token=${sign({ sub: 'u1', negocio_id: 'n1' })}`, t)
  t.match(await c.subscribe('n1'), { type: 'stats', data: { total_citas: 0 } })
  await db.pool.query("DELETE FROM negocios WHERE id = 'n1'")
  const res = await fetch(`${http}/notify/cita`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${serviceToken()}` },
    body: JSON.stringify({ negocio_id: 'n1', action: 'deleted' })
  })
  t.equal(res.status, 404)
  t.same(await c.next(), gone)
  t.equal(app.citasLive.hub.subscriberCount('estadisticas:n1'), 0)
  t.match(await c.request({ type: 'subscribe', id: 's', data: { channel: 'estadisticas:n1' } }), { type: 'subscribed' }, 'subscribing again is allowed')
  t.match(await c.next(), { type: 'error', id: 's', data: { code: 'not_found' } }, 'and answered not_found, as for any unknown negocio')
})
