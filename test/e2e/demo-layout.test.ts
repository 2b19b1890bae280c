import t from 'tap'
import { spawn } from 'node:child_process'
import { readdir, rename, rm, stat, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { Client, handshake } from '../helper.js'
import { demoFolder, startDemo, type Demo } from '../fixtures/demo.js'

async function stop (demo: Demo): Promise<number | null> {
  demo.p.child.kill('SIGTERM')
  return await demo.p.exited
}

async function totalCitas (t: Parameters<typeof Client.open>[1], demo: Demo, token: string): Promise<number> {
  const c = await Client.open(`ws://127.0.0.1:${demo.port}/ws?token=${token}`, t)
  const stats = await c.subscribe('barberia-centro')
  c.ws.terminate()
  return stats.data.total_citas as number
}

t.test('EMBEDDED_PG_DIR holds everything of the demo, and a folder of the earlier layout is moved into it with its data', async (t) => {
  const folder = await demoFolder(t)
  const dir = folder.dir
  const env = { DEMO_ACTIVITY: 'off' }

  const first = await startDemo(folder, env)
  t.same((await readdir(dir)).sort(), ['data', 'jwt-secret', 'lock', 'password'])
  t.same(await readdir(dirname(dir)), ['pg'], 'nothing beside the folder')
  for (const file of ['jwt-secret', 'password']) t.equal((await stat(join(dir, file))).mode & 0o777, 0o600, `${file} is private`)
  const total = await totalCitas(t, first, first.userToken)
  t.equal(await stop(first), 0)

  // The earlier layout: PostgreSQL's data in the folder itself, the password and the lock of a
  // killed process beside it, no secret file.
  await rename(dir, `${dir}.earlier`)
  await rename(join(`${dir}.earlier`, 'data'), dir)
  await rename(join(`${dir}.earlier`, 'password'), `${dir}.password`)
  await rm(`${dir}.earlier`, { recursive: true })
  const gone = spawn('true')
  await new Promise(resolve => gone.on('exit', resolve))
  await writeFile(`${dir}.lock`, String(gone.pid))

  const second = await startDemo(folder, env)
  t.match(second.p.output(), `moved the embedded database to ${join(dir, 'data')}`)
  t.same((await readdir(dirname(dir))).sort(), ['pg'], 'the password and the old lock moved in or went away')
  t.same((await readdir(dir)).sort(), ['data', 'jwt-secret', 'lock', 'password'])
  t.equal(await totalCitas(t, second, second.userToken), total, 'the data came along')
  t.equal(await stop(second), 0)

  // Rotating the demo's secret: delete the file; tokens of earlier runs stop working.
  await rm(join(dir, 'jwt-secret'))
  const third = await startDemo(folder, env)
  t.match(await handshake(`ws://127.0.0.1:${third.port}/ws?token=${second.userToken}`), { status: 401, body: { message: 'invalid token signature' } })
  t.equal(await totalCitas(t, third, third.userToken), total)
  t.equal(await stop(third), 0)
})
