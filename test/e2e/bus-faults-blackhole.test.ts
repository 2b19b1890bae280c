import t from 'tap'
import { Cluster, runTrials } from '../fixtures/cluster.js'
import { blackholeSession } from '../fixtures/faults.js'
import { NO_REDIS, ownPostgres, ownRedis } from '../fixtures/own-servers.js'

// The session connection (LISTEN, change capture) blackholed mid-burst, on each bus: the servers
// reach it through DATABASE_SESSION_URL, a proxy that stops carrying the flows open at the fault
// without closing them (a NAT that dropped its state). They must notice within 15 s, reconnect and
// resync. The two buses run at the same time: their trials mostly wait for that detection.
t.setTimeout(600_000)
t.jobs = 2

const pg = await ownPostgres(t)

t.test('e. postgres bus: the session connection blackholed mid-burst: detected within 15 s, reconnected, every subscriber ends right', { buffered: true }, async (t) => {
  const c = await Cluster.start(t, { bus: 'postgres', pg, sessionProxy: true, slots: ['A', 'B'] })
  await runTrials(t, c, blackholeSession(c))
})

t.test('e. redis bus: the session connection blackholed mid-burst: detected within 15 s, reconnected, every subscriber ends right', { buffered: true, skip: NO_REDIS }, async (t) => {
  const redis = await ownRedis(t)
  const c = await Cluster.start(t, { bus: 'redis', pg, redis, sessionProxy: true, slots: ['A', 'B'] })
  await runTrials(t, c, blackholeSession(c))
})
