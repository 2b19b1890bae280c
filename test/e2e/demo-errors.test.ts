import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { chmod, mkdir, realpath, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { runServer, type ServerProcess } from '../helper.js'
import { demoFolder, projectRoot } from '../fixtures/demo.js'
import { commandLine, processesIn } from '../../services/demo/processes.js'

async function oneLine (t: Test, p: ServerProcess): Promise<string> {
  t.equal(await p.exited, 1, 'exit code 1')
  const lines = p.output().trim().split('\n')
  t.equal(lines.length, 1, `one line: ${p.output()}`)
  return lines[0] ?? ''
}

/** A port held by this test process, as another program would hold it. */
async function heldPort (t: Test): Promise<number> {
  const holder = createServer()
  await new Promise<void>(resolve => holder.listen(0, '127.0.0.1', resolve))
  t.teardown(() => holder.close())
  return (holder.address() as { port: number }).port
}

t.test('without DATABASE_URL, a demo folder that cannot be created says to set DATABASE_URL', async (t) => {
  const folder = await demoFolder(t)
  const root = join(folder.dir, '..')
  await writeFile(join(root, 'a-file'), '')
  const p = runServer(folder.env({ LOG_LEVEL: 'warn', EMBEDDED_PG_DIR: join(root, 'a-file', 'pg') }))
  t.match(await oneLine(t, p), /^citas-live: cannot create the embedded database folder \S+a-file\/pg \(ENOTDIR: [^)]+\): set DATABASE_URL to use your own PostgreSQL, or EMBEDDED_PG_DIR to a writable folder$/)

  // A read-only working folder, as in the Docker image (its user cannot write to /app). Root may
  // write anywhere, so as root the server runs as nobody, from the sources with tsx like `npm start` without a build.
  const readOnly = join(root, 'read-only')
  await mkdir(readOnly, { mode: 0o555 })
  await chmod(readOnly, 0o555)
  const env = folder.env({ LOG_LEVEL: 'warn', EMBEDDED_PG_DIR: join(readOnly, '.data', 'postgres') })
  const q = process.getuid?.() !== 0 ? runServer(env) : runAsNobody(env)
  t.teardown(() => { q.child.kill('SIGKILL') })
  t.match(await oneLine(t, q), /^citas-live: cannot create the embedded database folder \S+read-only\/\.data\/postgres \((EACCES|EPERM): [^)]+\): set DATABASE_URL/)
})

function runAsNobody (env: Record<string, string>): ServerProcess {
  // Without the test runner's NODE_OPTIONS, whose coverage hooks would write where nobody may not.
  const child = spawn('env', ['-u', 'NODE_OPTIONS', process.execPath, '--import', 'tsx', 'server.ts'], {
    cwd: projectRoot,
    env: { PATH: process.env.PATH ?? '', HOME: '/tmp', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    uid: 65534,
    gid: 65534
  })
  let out = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr.on('data', (d: Buffer) => { out += d.toString() })
  return { child, output: () => out, exited: new Promise(resolve => child.on('exit', code => resolve(code))) }
}

t.test('an EMBEDDED_PG_PORT held by another program: one line naming it and what to do', async (t) => {
  const folder = await demoFolder(t)
  const port = await heldPort(t)
  const p = folder.track(runServer(folder.env({ LOG_LEVEL: 'warn', EMBEDDED_PG_PORT: String(port) })))
  t.equal(await oneLine(t, p), `citas-live: the embedded PostgreSQL cannot listen on 127.0.0.1:${port}: the port is in use by process ${process.pid} ` +
    `(${await commandLine(process.pid) ?? ''}); stop it, or set EMBEDDED_PG_PORT to another port (0: any free port)`)
})

t.test('a PORT in use: one line, and the demo\'s PostgreSQL is stopped, not left running', async (t) => {
  const folder = await demoFolder(t)
  const port = await heldPort(t)
  const p = folder.track(runServer(folder.env({ LOG_LEVEL: 'error', PORT: String(port) })))
  t.match(await oneLine(t, p), `citas-live: port ${port} on 127.0.0.1 is in use by process ${process.pid} (`)
  t.same(await processesIn(await realpath(join(folder.dir, 'data')), 'postgres'), [], 'no PostgreSQL left in the folder')
  t.notOk(existsSync(join(folder.dir, 'lock')), 'the lock is released')
})
