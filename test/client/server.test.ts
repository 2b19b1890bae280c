import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { connect, type CitasLiveClient, type CitasLiveError, type ConnectionState, type Stats, type Timers } from '../../client/index.js'
import { addCita, addNegocio, build, listen, listenAgain, listenRestartable, serviceToken, sign, waitFor } from '../helper.js'

/** Real timers that keep track of the ones still pending: none left means the client will do nothing more on its own. */
function countedTimers (): Timers & { pending: Set<unknown> } {
  const pending = new Set<unknown>()
  return {
    pending,
    setTimeout: (fn, ms) => {
      const handle = setTimeout(() => { pending.delete(handle); fn() }, ms)
      pending.add(handle)
      return handle
    },
    clearTimeout: (handle) => {
      pending.delete(handle)
      clearTimeout(handle as ReturnType<typeof setTimeout>)
    },
    now: () => Date.now()
  }
}

/** The client on Node 20 with the ws package, against a real server. */
function open (t: Test, url: string, token: string, channels: string[]) {
  const timers = countedTimers()
  const states: ConnectionState[] = []
  const errors: CitasLiveError[] = []
  const stats: Stats[] = []
  const client: CitasLiveClient = connect({
    url,
    token,
    channels,
    WebSocket,
    backoff: { initial: 50, max: 200, restartWindow: 100 },
    timers,
    onState: (s) => states.push(s.state),
    onError: (e) => errors.push(e),
    onStats: (s) => stats.push(s)
  })
  t.teardown(() => client.close())
  return { client, states, errors, stats, timers }
}

t.test('subscribes, follows notify, and survives a server restart on the same port', async (t) => {
  const first = await build(t)
  await addNegocio(first.db.pool, 'n1')
  await addCita(first.db.pool, 'n1', new Date(), 'atendida')
  const { port, ws } = await listenRestartable(first.app)
  const { client, states, stats } = open(t, `${ws}/ws`, sign({ negocio_id: 'n1' }), ['n1'])
  await waitFor(() => client.stats.get('n1')?.total_citas === 1)
  t.match(client.stats.get('n1'), { citas_hoy: 1, total_citas: 1, citas_completadas: 1, citas_canceladas: 0 })

  await addCita(first.db.pool, 'n1', new Date(), 'cancelada')
  const res = await first.app.inject({ method: 'POST', url: '/notify/cita', headers: { authorization: `Bearer ${serviceToken()}` }, payload: { negocio_id: 'n1', action: 'created' } })
  t.equal(res.statusCode, 200)
  await waitFor(() => client.stats.get('n1')?.citas_canceladas === 1)

  await first.app.close()
  await waitFor(() => client.state === 'reconnecting')
  await addCita(first.db.pool, 'n1', new Date())
  const second = await build(t, { database: first.db })
  await listenAgain(second.app, port)
  await waitFor(() => client.state === 'connected')
  await waitFor(() => client.stats.get('n1')?.total_citas === 3)
  t.same(states.slice(0, 3), ['connecting', 'connected', 'reconnecting'])
  t.equal(states.at(-1), 'connected')
  t.ok(stats.length >= 3)
})

t.test('a refused token stops after one handshake and says why', async (t) => {
  const { app } = await build(t)
  let handshakes = 0
  const { ws } = await listen(app)
  app.server.on('upgrade', () => { handshakes++ })
  const { client, errors, timers } = open(t, `${ws}/ws`, sign({ negocio_id: 'n1' }, { secret: 'some-other-secret-0123456789' }), ['n1'])
  await waitFor(() => client.state === 'disconnected')
  t.match(errors, [{ code: 'unauthorized', status: 401 }])
  t.equal(timers.pending.size, 0, 'no retry pending: it has stopped for good')
  t.equal(handshakes, 1)
})

t.test('a forbidden channel is reported with its name', async (t) => {
  const { app, db } = await build(t)
  await addNegocio(db.pool, 'n1')
  const { ws } = await listen(app)
  const { client, errors } = open(t, `${ws}/ws`, sign({ negocio_id: 'n1' }), ['n1', 'otro'])
  await waitFor(() => errors.length === 1 && client.stats.has('n1'))
  t.match(errors, [{ code: 'forbidden', channel: 'estadisticas:otro' }])
  t.same(client.channels, ['estadisticas:n1'])
})
