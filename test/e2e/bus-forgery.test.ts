import t, { type Test } from 'tap'
import pg from 'pg'
import { Redis } from 'ioredis'
import { randomBytes } from 'node:crypto'
import { createBusCodec } from '../../services/bus/codec.js'
import { pgBusChannel } from '../../services/bus/bus.js'
import { addCita, addNegocio, build, Client, listen, serviceToken, sign, testDatabase, testRole, waitFor } from '../helper.js'
import { NO_REDIS, redisUrl } from '../fixtures/own-servers.js'

// Whoever may NOTIFY on the database or PUBLISH on Redis must not be able to push figures.

// A key of this file's own: other test files' instances on the shared Redis sign with the test JWT secret.
const BUS_SECRET = randomBytes(24).toString('hex')

function forgedMessages (): string[] {
  const snapshot = (extra: Record<string, unknown> = {}, version = 1e18) => ({
    stats: { negocio_id: 'n1', citas_hoy: 0, total_citas: 999, citas_completadas: 0, citas_canceladas: 0, timestamp: 1, ...extra },
    dayEndsAt: Date.now() + 3_600_000,
    version
  })
  const ours = createBusCodec(BUS_SECRET) // what only a holder of the secret could sign
  return [
    JSON.stringify({ origin: 'forger', snapshots: [snapshot()] }), // unsigned, the old format
    createBusCodec('another-secret-0123456789abcdef').encode({ origin: 'forger', snapshots: [snapshot()] }), // wrong key
    `${'A'.repeat(43)}.{"origin":"forger"}`, // a made-up MAC
    ours.encode({ origin: 'forger', snapshots: [snapshot({ extra: 1 }, 1)] } as never), // unknown field: malformed
    ours.encode({ origin: 'forger', snapshots: [snapshot({}, 1e18)] }), // version 1e18, past any integer the clock reaches: malformed
    ours.encode({ origin: 'forger', snapshots: [snapshot({ total_citas: -1 }, 1)] }), // a negative figure: malformed
    ours.encode({ origin: 'forger', snapshots: [snapshot({}, 5e15)] }), // a version from the year 2128: implausible
    ours.encode({ origin: 'forger', snapshots: [snapshot({ total_citas: 1, citas_completadas: 5 }, 1)] }) // more completed than total: implausible
  ]
}

async function twoInstances (t: Test, live: Record<string, unknown>) {
  const db = await testDatabase(t)
  await addNegocio(db.pool, 'n1')
  const a = await build(t, { database: db, live: { changeCapture: false, busSecret: BUS_SECRET, ...live, instanceId: 'a' } })
  const b = await build(t, { database: db, live: { changeCapture: false, busSecret: BUS_SECRET, ...live, instanceId: 'b' } })
  // A Redis subscription is made in the background: what is published before it exists is never seen.
  await waitFor(() => a.app.citasLive.live.status().bus.up && b.app.citasLive.live.status().bus.up)
  const { http } = await listen(a.app)
  const { ws } = await listen(b.app)
  const client = await Client.open(`${ws}/ws?token=${sign({ sub: 'u1', negocio_id: 'n1' })}`, t)
  t.match(await client.subscribe('n1'), { type: 'stats', data: { total_citas: 0 } })
  return { db, a, b, http, client }
}

async function genuineChangeArrives (t: Test, setup: Awaited<ReturnType<typeof twoInstances>>): Promise<void> {
  await addCita(setup.db.pool, 'n1', new Date())
  const res = await fetch(`${setup.http}/notify/cita`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${serviceToken()}` },
    body: JSON.stringify({ negocio_id: 'n1', action: 'created' })
  })
  t.equal(res.status, 200)
  t.match(await setup.client.nextMatching(m => m.type === 'stats' && m.data.total_citas === 1), { data: { total_citas: 1 } },
    'the genuine change from the other instance still reaches the subscriber')
  t.same(setup.client.received.filter(m => m.data?.total_citas === 999 || m.data?.total_citas === -1), [], 'no forged figures ever reached it')
}

t.test('postgres bus: NOTIFY from a role with no privileges cannot forge stats', async (t) => {
  const setup = await twoInstances(t, { bus: 'postgres' })
  const role = await testRole(t, setup.db, 'forger')
  const forger = new pg.Client({ connectionString: role.url })
  await forger.connect()
  t.teardown(() => forger.end())
  await t.rejects(forger.query('SELECT count(*) FROM citas'), /permission denied/, 'the role cannot even read citas')
  const forged = forgedMessages()
  // The channel's name comes from the key (no role can list the channels others LISTEN on): this one learned it.
  for (const payload of forged) await forger.query('SELECT pg_notify($1, $2)', [pgBusChannel(createBusCodec(BUS_SECRET)), payload])
  await waitFor(() => Object.values(setup.b.app.citasLive.live.busDropped).reduce((x, y) => x + y, 0) === forged.length)
  t.same(setup.b.app.citasLive.live.busDropped, { unsigned: 1, bad_signature: 2, malformed: 3, implausible: 2, replayed: 0, stale: 0 }, 'each refused and counted by reason')
  await genuineChangeArrives(t, setup)
  const metrics = await setup.b.app.citasLive.metrics.metrics()
  t.match(metrics, /citas_live_bus_messages_dropped_total\{reason="bad_signature"\} 2/, 'and in the metrics')
})

t.test('redis bus: PUBLISH by anyone who reaches Redis cannot forge stats', { skip: NO_REDIS }, async (t) => {
  const REDIS_URL = await redisUrl(t)
  const setup = await twoInstances(t, { bus: 'redis', redisUrl: REDIS_URL })
  const forger = new Redis(REDIS_URL)
  t.teardown(() => { forger.disconnect() })
  const forged = forgedMessages()
  // The channel is named after the key (deployments with other keys never share one), which is no secret.
  for (const payload of forged) await forger.publish(`citas-live:stats:${createBusCodec(BUS_SECRET).channelTag}`, payload)
  await waitFor(() => Object.values(setup.b.app.citasLive.live.busDropped).reduce((x, y) => x + y, 0) === forged.length)
  t.same(setup.b.app.citasLive.live.busDropped, { unsigned: 1, bad_signature: 2, malformed: 3, implausible: 2, replayed: 0, stale: 0 }, 'each refused and counted by reason')
  await genuineChangeArrives(t, setup)
})
