import t from 'tap'
import { existsSync } from 'node:fs'
import { realpath } from 'node:fs/promises'
import { join } from 'node:path'
import { Client, SseClient } from '../helper.js'
import { demoFolder, demoReady, runServerInGroup, warnings } from '../fixtures/demo.js'
import { processesIn } from '../../services/demo/processes.js'

t.test('Ctrl-C in a terminal (SIGINT to the whole process group) shuts the demo down cleanly', async (t) => {
  const folder = await demoFolder(t)
  const p = folder.track(runServerInGroup(folder.env()))
  t.teardown(() => { try { process.kill(-(p.child.pid ?? 0), 'SIGKILL') } catch {} })
  const demo = await demoReady(p)
  // An open dashboard, and the demo's own activity: connections in use when the signal comes.
  const c = await Client.open(`ws://127.0.0.1:${demo.port}/ws?token=${demo.userToken}`, t)
  await c.subscribe('barberia-centro')
  // And one behind a proxy that breaks WebSocket: the same stats as Server-Sent Events.
  const stream = await SseClient.open(`http://127.0.0.1:${demo.port}/sse?channels=estadisticas:barberia-centro`, t, { authorization: `Bearer ${demo.userToken}` })
  t.match(await stream.next(), { event: 'stats', data: { negocio_id: 'barberia-centro' } })
  const dataDir = await realpath(join(folder.dir, 'data'))

  const before = p.output().length
  process.kill(-(p.child.pid ?? 0), 'SIGINT')
  t.equal((await c.closed).code, 1012, 'the dashboard is told the server restarts')
  await stream.ended
  t.match(stream.events.at(-1), { event: 'close', data: { code: 1012, reason: 'server restarting' } }, 'so is the event stream, which then ends')
  t.equal(await p.exited, 0)
  const shutdown = p.output().slice(before)
  t.match(shutdown, /"signal":"SIGINT","msg":"shutting down"/)
  t.same(warnings(shutdown), [], 'no warning or error while shutting down')
  t.same(await processesIn(dataDir, 'postgres'), [], 'PostgreSQL has stopped')
  t.notOk(existsSync(join(dataDir, 'postmaster.pid')), 'cleanly: its pid file is gone')
  t.notOk(existsSync(join(folder.dir, 'lock')), 'the lock is released')
})
