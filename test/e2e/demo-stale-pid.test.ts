import t from 'tap'
import pg from 'pg'
import { execFileSync, spawn } from 'node:child_process'
import { readFile, realpath, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { addCita, Client, waitFor } from '../helper.js'
import { demoFolder, postmasterPid, startDemo } from '../fixtures/demo.js'
import { isAlive, processesIn } from '../../services/demo/processes.js'

t.test('pid files whose pids now name unrelated processes do not stop the demo from starting', async (t) => {
  const folder = await demoFolder(t)
  const first = await startDemo(folder, { DEMO_ACTIVITY: 'off' })
  const pool = new pg.Pool({ connectionString: first.databaseUrl, max: 1 })
  pool.on('error', () => {}) // ended, it may still be closing when the demo stops its database
  await addCita(pool, 'barberia-centro', new Date())
  const { rows } = await pool.query<{ n: number }>("SELECT count(*)::int AS n FROM citas WHERE negocio_id = 'barberia-centro'")
  await pool.end()

  // The server and its PostgreSQL both killed (a power cut, the OOM killer)...
  const postmaster = await postmasterPid(folder.dir)
  first.p.child.kill('SIGKILL')
  process.kill(postmaster, 'SIGKILL')
  await first.p.exited
  const dataDir = await realpath(join(folder.dir, 'data'))
  await waitFor(async () => (await processesIn(dataDir, 'postgres'))?.length === 0, 30_000)

  // ...and their pids reused by an unrelated process of the user PostgreSQL runs as, so both look alive.
  const asRoot = process.getuid?.() === 0
  const user = asRoot
    ? { uid: Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' })), gid: Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' })) }
    : {}
  const unrelated = spawn('sleep', ['600'], { ...user, stdio: 'ignore' })
  t.teardown(() => { unrelated.kill('SIGKILL') })
  const pid = unrelated.pid ?? 0
  const pidFile = join(dataDir, 'postmaster.pid')
  const [, ...rest] = (await readFile(pidFile, 'utf8')).split('\n')
  await writeFile(pidFile, [String(pid), ...rest].join('\n'))
  await writeFile(join(folder.dir, 'lock'), `${pid} 1`) // another start time than the process's: not the server that wrote it

  const second = await startDemo(folder, { DEMO_ACTIVITY: 'off' })
  t.match(second.p.output(), `removing a stale ${pidFile}: its pid ${pid} is now sleep 600`)
  t.ok(isAlive(pid), 'the unrelated process is left alone')
  const c = await Client.open(`ws://127.0.0.1:${second.port}/ws?token=${first.userToken}`, t)
  t.match(await c.subscribe('barberia-centro'), { type: 'stats', data: { total_citas: rows[0]?.n } }, 'same data, same token')
  second.p.child.kill('SIGTERM')
  t.equal(await second.p.exited, 0)
})
