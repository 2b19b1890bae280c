import t from 'tap'
import { Cluster, runTrials, type Slot } from '../fixtures/cluster.js'
import { killOneInstance, restartPostgres, restartRedis, startedWhileRedisDown, terminateListener } from '../fixtures/faults.js'
import { NO_REDIS, ownPostgres, ownRedis, type OwnPostgres, type OwnRedis } from '../fixtures/own-servers.js'

// No update lost to a bus fault, with real processes on the Redis bus: two or three instances, change
// capture on (its LISTEN connection is on PostgreSQL), subscribers spread over them, bursts of
// direct SQL and REST API writes; a fault in the middle of each burst; then every subscriber of
// every running instance must show the database's own figures. PostgreSQL and Redis are this file's own.
t.setTimeout(600_000)

// Without redis-server every test here is skipped, saying so; the servers start with the first test.
let servers: Promise<{ pg: OwnPostgres, redis: OwnRedis }> | undefined
const own = async () => await (servers ??= (async () => ({ pg: await ownPostgres(t), redis: await ownRedis(t) }))())

t.test('a. kill -9 of one instance mid-burst: the survivors\' subscribers, and those that moved to them, end right', { skip: NO_REDIS }, async (t) => {
  const { pg, redis } = await own()
  const c = await Cluster.start(t, { bus: 'redis', pg, redis })
  await runTrials(t, c, killOneInstance(c))
})

t.test('b. Redis restarted mid-burst: every subscriber ends right', { skip: NO_REDIS }, async (t) => {
  const { pg, redis } = await own()
  const c = await Cluster.start(t, { bus: 'redis', pg, redis })
  await runTrials(t, c, restartRedis(redis))
})

t.test('c. PostgreSQL restarted mid-burst (fast, then immediate shutdown): every subscriber ends right', { skip: NO_REDIS }, async (t) => {
  const { pg, redis } = await own()
  const c = await Cluster.start(t, { bus: 'redis', pg, redis, slots: ['A', 'B'] })
  await runTrials(t, c, restartPostgres(c))
})

t.test('d. the LISTEN connections terminated mid-burst: every subscriber ends right', { skip: NO_REDIS }, async (t) => {
  const { pg, redis } = await own()
  const c = await Cluster.start(t, { bus: 'redis', pg, redis, slots: ['A', 'B'] })
  await runTrials(t, c, terminateListener(c))
})

t.test('f. an instance started while Redis is down subscribes when it comes up; its subscribers end right', { skip: NO_REDIS }, async (t) => {
  const { pg, redis } = await own()
  const c = await Cluster.start(t, { bus: 'redis', pg, redis, slots: ['A', 'L'] })
  await runTrials(t, c, startedWhileRedisDown(c, redis, c.slots[1] as Slot))
})
