import t from 'tap'
import pg from 'pg'
import { addCita, Client, type TestLike } from '../helper.js'
import { demoFolder, postmasterPid, startDemo, type Demo } from '../fixtures/demo.js'
import { isAlive } from '../../services/demo/processes.js'

/** What a dashboard opened with `token` shows for barberia-centro. */
async function totalCitas (t: TestLike, demo: Demo, token: string): Promise<number> {
  const c = await Client.open(`ws://127.0.0.1:${demo.port}/ws?token=${token}`, t)
  const stats = await c.subscribe('barberia-centro')
  c.ws.terminate()
  return stats.data.total_citas as number
}

async function addOneCita (demo: Demo): Promise<void> {
  const pool = new pg.Pool({ connectionString: demo.databaseUrl, max: 1 })
  pool.on('error', () => {}) // ended, it may still be closing when the demo stops its database
  await addCita(pool, 'barberia-centro', new Date())
  await pool.end()
}

t.test('after kill -9 of the server, and then of the server and its PostgreSQL, the next start comes up with the same data and tokens', async (t) => {
  const folder = await demoFolder(t)
  const first = await startDemo(folder, { DEMO_ACTIVITY: 'off' })
  const seeded = await totalCitas(t, first, first.userToken)
  await addOneCita(first)
  const orphan = await postmasterPid(folder.dir)
  t.ok(orphan > 0 && isAlive(orphan), 'PostgreSQL runs')

  first.p.child.kill('SIGKILL')
  await first.p.exited
  t.ok(isAlive(orphan), 'PostgreSQL outlives the killed server')

  // Same port on purpose: the PostgreSQL left running holds it.
  const second = await startDemo(folder, { DEMO_ACTIVITY: 'off', EMBEDDED_PG_PORT: String(first.pgPort) })
  t.match(second.p.output(), `stopping the embedded PostgreSQL (pid ${orphan}) left running by a process that did not shut down`)
  t.equal(second.pgPort, first.pgPort, 'on the port it asked for')
  t.not(await postmasterPid(folder.dir), orphan, 'a PostgreSQL of its own')
  t.equal(await totalCitas(t, second, first.userToken), seeded + 1, 'the first run\'s token works and its data is there')

  const postmaster = await postmasterPid(folder.dir)
  second.p.child.kill('SIGKILL')
  process.kill(postmaster, 'SIGKILL')
  await second.p.exited

  // Its backends may still be exiting: the server waits for them before PostgreSQL recovers.
  const third = await startDemo(folder, { DEMO_ACTIVITY: 'off' })
  t.equal(await totalCitas(t, third, first.userToken), seeded + 1, 'PostgreSQL recovered from the crash with the data')
  third.p.child.kill('SIGTERM')
  t.equal(await third.p.exited, 0)
})
