// `npm test [-- tap args]`: PostgreSQL and Redis (unless TEST_DATABASE_URL, TEST_REDIS_URL) started once per run, not per file; then tap.
import { spawn, spawnSync } from 'node:child_process'
import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { createRequire } from 'node:module'
import { freePort, startEmbeddedPostgres } from '../services/demo/embedded-postgres.js'

const say = (line: string): void => { process.stdout.write(`# ${line}\n`) }
const env: NodeJS.ProcessEnv = { ...process.env }
const stops: Array<() => Promise<void> | void> = []

async function startPostgres (): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'citas-live-suite-'))
  process.once('exit', () => rmSync(root, { recursive: true, force: true }))
  await chmod(root, 0o755) // as root, PostgreSQL runs as the postgres user, which must reach the folder
  // Nothing is kept, and every test file runs many server processes at once.
  const settings = { max_connections: '400', fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off' }
  const server = await startEmbeddedPostgres({ dir: join(root, 'pg'), port: 0, settings })
  stops.push(async () => {
    await server.stop()
    await rm(root, { recursive: true, force: true })
  })
  const url = new URL(server.connectionString)
  url.pathname = '/postgres'
  env.TEST_DATABASE_URL = url.toString()
  say(`PostgreSQL: embedded, 127.0.0.1:${server.port}, for this run (set TEST_DATABASE_URL to use another)`)
}

async function startRedis (): Promise<void> {
  if (spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).error !== undefined) {
    say('Redis: no redis-server on PATH and no TEST_REDIS_URL: the tests that need Redis are skipped')
    return
  }
  for (let attempt = 1; ; attempt++) {
    const port = await freePort()
    const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'ignore'] })
    let out = ''
    const ready = await new Promise<boolean>((resolve) => {
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString()
        if (/Ready to accept connections/.test(out)) resolve(true)
      })
      child.once('exit', () => resolve(false))
    })
    if (ready) {
      child.stdout.removeAllListeners('data')
      child.stdout.resume()
      stops.push(() => { child.kill('SIGKILL') })
      env.TEST_REDIS_URL = `redis://127.0.0.1:${port}`
      say(`Redis: redis-server on 127.0.0.1:${port}, for this run (set TEST_REDIS_URL to use another)`)
      return
    }
    if (attempt >= 5) throw new Error(`redis-server did not start: ${out.trim().split('\n').slice(-3).join(' ')}`)
  }
}

// Never under tap itself (a test file that ran this would start the whole suite again, and again).
if (process.env.TAP !== undefined || process.env.TAP_CHILD_ID !== undefined) {
  process.stderr.write('scripts/run-tests.ts starts tap: it is not a test file\n')
  process.exit(1)
}

let code = 1
try {
  if ((env.TEST_DATABASE_URL ?? '') === '') await startPostgres()
  if ((env.TEST_REDIS_URL ?? '') === '') await startRedis()
  const manifest = createRequire(import.meta.url).resolve('tap/package.json')
  const bin = (JSON.parse(readFileSync(manifest, 'utf8')) as { bin: { tap: string } }).bin.tap
  const tap = spawn(process.execPath, [join(dirname(manifest), bin), ...process.argv.slice(2)], { env, stdio: 'inherit' })
  // Ctrl-C reaches tap through the terminal; the servers stop once it has ended.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => { tap.kill(signal) })
  code = await new Promise<number>((resolve) => tap.once('exit', (exitCode, signal) => resolve(exitCode ?? (signal !== null ? 1 : 0))))
} catch (err) {
  process.stderr.write(`npm test: ${(err as Error).message}\n`)
} finally {
  for (const stop of stops.splice(0).reverse()) await stop()
}
process.exit(code)
