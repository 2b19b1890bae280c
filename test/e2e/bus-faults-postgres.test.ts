import t from 'tap'
import { Cluster, runTrials } from '../fixtures/cluster.js'
import { killOneInstance, restartPostgres, terminateListener } from '../fixtures/faults.js'
import { ownPostgres } from '../fixtures/own-servers.js'

// No update lost to a bus fault, with real processes on the PostgreSQL bus (LISTEN/NOTIFY):
// two or three instances, change capture on, subscribers spread over them, bursts of direct SQL and
// REST API writes; a fault in the middle of each burst; then every subscriber of every running
// instance must show the database's own figures. The PostgreSQL server is this file's own.
t.setTimeout(600_000)

const pg = await ownPostgres(t)

t.test('a. kill -9 of one instance mid-burst: the survivors\' subscribers, and those that moved to them, end right', async (t) => {
  const c = await Cluster.start(t, { bus: 'postgres', pg })
  await runTrials(t, c, killOneInstance(c))
})

t.test('c. PostgreSQL restarted mid-burst (fast, then immediate shutdown): every subscriber ends right', async (t) => {
  const c = await Cluster.start(t, { bus: 'postgres', pg, slots: ['A', 'B'] })
  await runTrials(t, c, restartPostgres(c))
})

t.test('d. the LISTEN connections terminated mid-burst: every subscriber ends right', async (t) => {
  const c = await Cluster.start(t, { bus: 'postgres', pg, slots: ['A', 'B'] })
  await runTrials(t, c, terminateListener(c))
})
