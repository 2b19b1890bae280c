import Fastify, { type FastifyInstance } from 'fastify'
import { createSigner } from 'fast-jwt'
import pg from 'pg'
import { readFileSync, rmSync } from 'node:fs'
import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import WebSocket from 'ws'
import http from 'node:http'
import { spawn, type ChildProcess } from 'node:child_process'
import app, { type AppOptions } from '../app.js'
import { migrate } from '../db/migrations.js'
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../services/demo/embedded-postgres.js'
import { loggerOptions } from '../services/http/logging.js'
import type { CitasLive } from '../plugins/namespace.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The registration of build(): app.ts `decorator: 'citasLive'`. */
    citasLive: CitasLive
  }
}

/** The subset of tap's Test the helpers use. */
export interface TestLike {
  teardown: (fn: () => unknown) => void
}

export const SECRET = 'test-secret-0123456789abcdef-0123456789'

/** Signs an HS256 token with the test secret (or another one). */
export function sign (claims: Record<string, unknown>, opts: { secret?: string, expiresIn?: number, algorithm?: 'HS256' | 'HS384' | 'HS512' } = {}): string {
  const signer = createSigner({
    key: opts.secret ?? SECRET,
    algorithm: opts.algorithm ?? 'HS256',
    ...(opts.expiresIn !== undefined ? { expiresIn: opts.expiresIn } : {})
  })
  return signer(claims)
}

export const serviceToken = (): string => sign({ sub: 'rest-api', role: 'service' })

let embedded: Promise<{ pg: EmbeddedPostgres, dir: string }> | undefined

/**
 * A random port below the kernel's ephemeral range (32768-60999 on Linux), so no outgoing
 * connection of any process on the machine can be holding it; callers still retry when it is taken.
 */
export function fixedPort (): number {
  let ephemeralLow = 32768
  try {
    ephemeralLow = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || ephemeralLow
  } catch {}
  const min = 10000
  const max = Math.max(min + 1000, ephemeralLow - 1)
  return min + Math.floor(Math.random() * (max - min + 1))
}

/**
 * A PostgreSQL server URL with admin rights: TEST_DATABASE_URL when set, else one embedded server
 * started once per test process and stopped when the process's tests end.
 */
export async function serverUrl (): Promise<string> {
  if (process.env.TEST_DATABASE_URL !== undefined && process.env.TEST_DATABASE_URL !== '') return process.env.TEST_DATABASE_URL
  embedded ??= (async () => {
    const dir = await mkdtemp(join(tmpdir(), 'citas-live-test-'))
    let server: EmbeddedPostgres | undefined
    const { default: tap } = await import('tap')
    tap.teardown(async () => {
      await server?.stop()
      await rm(dir, { recursive: true, force: true })
    })
    // If the process ends without its teardown (a crash, a timeout), the folder still goes.
    process.once('exit', () => { rmSync(dir, { recursive: true, force: true }) })
    await chmod(dir, 0o755) // as root, PostgreSQL runs as the postgres user, which must reach the folder
    // Another process may hold the port: try another one (the data folder is initialised once).
    for (let attempt = 1; server === undefined; attempt++) {
      try {
        server = await startEmbeddedPostgres({ dir: join(dir, 'pg'), port: fixedPort() })
      } catch (err) {
        if (attempt >= 5 || !/did not start/.test((err as Error).message)) throw err
      }
    }
    return { pg: server, dir }
  })()
  return (await embedded).pg.connectionString
}

function withDatabase (url: string, database: string): string {
  const u = new URL(url)
  u.pathname = `/${database}`
  return u.toString()
}

export interface TestDatabase {
  /** URL of a fresh, migrated database that only this test uses (as its owner). */
  url: string
  /** The same database as the server's superuser. */
  adminUrl: string
  /** Cuts the database off (no new connections, existing ones killed) or lets it back. */
  setDown: (down: boolean) => Promise<void>
  /** A pool on it, for the test's own inserts and checks. */
  pool: pg.Pool
  name: string
}

/**
 * Creates a migrated database of its own for one test; dropped at teardown. With `owner`, as a
 * deployment runs: the database belongs to a login role of its own that is no superuser, the
 * migrations run as that role, and `url` connects as it (the one to give citas-live), while
 * `pool` and `adminUrl` stay the superuser's, for the test's own writes and checks.
 */
export async function testDatabase (t: TestLike, opts: { owner?: boolean } = {}): Promise<TestDatabase> {
  const server = await serverUrl()
  const name = `citas_test_${process.pid}_${randomBytes(4).toString('hex')}`
  const owner = opts.owner === true ? { name: `${name}_owner`, password: randomBytes(12).toString('hex') } : undefined
  const admin = new pg.Client({ connectionString: server })
  await admin.connect()
  if (owner !== undefined) await admin.query(`CREATE ROLE ${owner.name} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '${owner.password}'`)
  await admin.query(`CREATE DATABASE ${name}${owner !== undefined ? ` OWNER ${owner.name}` : ''}`)
  await admin.end()
  const adminUrl = withDatabase(server, name)
  const url = owner === undefined ? adminUrl : asRole(adminUrl, owner.name, owner.password)
  const pool = new pg.Pool({ connectionString: adminUrl, max: 4 })
  pool.on('error', () => {})
  const migrator = new pg.Pool({ connectionString: url, max: 1 })
  // pool.end() resolves before its connections have closed: a drop that terminates one must not throw.
  migrator.on('error', () => {})
  await migrate(migrator)
  await migrator.end()
  t.teardown(async () => {
    await pool.end()
    const c = new pg.Client({ connectionString: server })
    await c.connect()
    await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    if (owner !== undefined) await c.query(`DROP ROLE IF EXISTS ${owner.name}`)
    await c.end()
  })
  async function setDown (down: boolean): Promise<void> {
    const c = new pg.Client({ connectionString: server })
    await c.connect()
    try {
      await c.query(`ALTER DATABASE ${name} ALLOW_CONNECTIONS ${down ? 'false' : 'true'}`)
      if (down) await c.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1', [name])
    } finally {
      await c.end()
    }
  }
  t.teardown(async () => { await setDown(false) })
  return { url, adminUrl, pool, name, setDown }
}

function asRole (url: string, role: string, password: string): string {
  const u = new URL(url)
  u.username = role
  u.password = password
  return u.toString()
}

/**
 * A login role of its own (cluster-wide, so its name is random), with a password as every real
 * deployment's roles have (the embedded server asks for one), and no privilege beyond what PUBLIC
 * has; dropped at teardown with what it owns. `url`: `db` as this role.
 */
export async function testRole (t: TestLike, db: TestDatabase, prefix = 'role'): Promise<{ name: string, url: string }> {
  const name = `${prefix}_${randomBytes(4).toString('hex')}`
  const password = randomBytes(12).toString('hex')
  await db.pool.query(`CREATE ROLE ${name} LOGIN PASSWORD '${password}'`)
  t.teardown(async () => {
    await db.pool.query(`DROP OWNED BY ${name}`).catch(() => {})
    await db.pool.query(`DROP ROLE IF EXISTS ${name}`)
  })
  return { name, url: asRole(db.adminUrl, name, password) }
}

/**
 * How long a test waits for something that should happen by itself. Generous: on a loaded two-core
 * machine a push can take seconds, and a wait that is met returns at once anyway.
 */
export const WAIT_MS = 10_000

/** Polls until cond() holds; rejects after ms. */
export async function waitFor (cond: () => boolean | Promise<boolean>, ms = WAIT_MS): Promise<void> {
  const end = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time')
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}

export interface Built {
  app: FastifyInstance
  db: TestDatabase
}

/**
 * Waits until `app` (built by build()) leads change capture and its first poll has handed on '*'
 * (a new leader's resync of every channel shown, taken when it is handed on). Subscribed to after
 * this, a channel gets no query from that resync, so the queries a test counts are its own.
 */
export async function leading (app: FastifyInstance): Promise<void> {
  await waitFor(() => app.citasLive.live.status().changeCapture.role === 'leader' && app.citasLive.live.capturePolls >= 1)
}

/** A Fastify app with citas-live registered on a fresh database, ready; closed at teardown. */
export async function build (t: TestLike, opts: Partial<AppOptions> & { database?: TestDatabase } = {}): Promise<Built> {
  const { database, ...appOpts } = opts
  const db = database ?? await testDatabase(t)
  // The server's own logger options, every level, into memory: no test app may log a token.
  const fastify = Fastify({ logger: loggerOptions('trace', logCollector) })
  await fastify.register(app, {
    decorator: 'citasLive',
    ...appOpts,
    db: { connectionString: db.url, ...appOpts.db },
    auth: { secret: SECRET, ...appOpts.auth }
  })
  t.teardown(() => fastify.close())
  await fastify.ready()
  return { app: fastify, db }
}

/** Anything shaped like a JWT (compact form, header starting `{"`). */
export const JWT_SHAPE = /eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/

/**
 * Every log line the suite's servers write passes through here: the apps of build() and the JSON
 * lines of runServer() processes. One shaped like a JWT fails the test file (exit code 1, lines shown).
 */
const leakedLines: string[] = []
let loggedLines = 0
/** The last lines logged by this process's apps, for tests that check what an operator reads. */
const recentLines: string[] = []
const logCollector = { write: (line: string): void => { collectLogLine(line) } }
function collectLogLine (line: string): void {
  loggedLines++
  if (JWT_SHAPE.test(line)) leakedLines.push(line)
  recentLines.push(line)
  if (recentLines.length > 20_000) recentLines.splice(0, 10_000)
}

/** Log lines of build() apps in this test process (the last 10,000 at least) whose message matches. */
export function logged (msg: RegExp): Array<{ level: number, msg: string, [k: string]: unknown }> {
  return recentLines.map(l => JSON.parse(l) as { level: number, msg: string }).filter(l => msg.test(l.msg))
}
process.on('exit', () => {
  if (leakedLines.length === 0) return
  process.stderr.write(`${leakedLines.length} of ${loggedLines} log lines held a token:\n${leakedLines.slice(0, 5).join('\n')}\n`)
  process.exitCode = 1
})

/** Listens on 127.0.0.1 on a free port; returns the base URLs. */
export async function listen (fastify: FastifyInstance): Promise<{ http: string, ws: string, port: number }> {
  await fastify.listen({ port: 0, host: '127.0.0.1' })
  const { port } = fastify.server.address() as AddressInfo
  return { http: `http://127.0.0.1:${port}`, ws: `ws://127.0.0.1:${port}`, port }
}

const isAddressInUse = (err: unknown): boolean => (err as NodeJS.ErrnoException).code === 'EADDRINUSE'

/**
 * Like listen(), for a server the test restarts on the same port (listenAgain): a port from the
 * ephemeral range could be taken by any outgoing connection on the machine while the server is down.
 */
export async function listenRestartable (fastify: FastifyInstance): Promise<{ http: string, ws: string, port: number }> {
  for (let attempt = 1; ; attempt++) {
    const port = fixedPort()
    try {
      await fastify.listen({ port, host: '127.0.0.1' })
      return { http: `http://127.0.0.1:${port}`, ws: `ws://127.0.0.1:${port}`, port }
    } catch (err) {
      if (attempt >= 20 || !isAddressInUse(err)) throw err
    }
  }
}

/** Listens on `port` again after a restart, waiting while another socket still holds it. */
export async function listenAgain (fastify: FastifyInstance, port: number, ms = 10_000): Promise<void> {
  await waitFor(async () => {
    try {
      await fastify.listen({ port, host: '127.0.0.1' })
      return true
    } catch (err) {
      if (!isAddressInUse(err)) throw err
      return false
    }
  }, ms)
}

/** build() listening on a free port, with the given negocios added; `url` is the /ws endpoint. */
export async function serve (t: TestLike, opts: Parameters<typeof build>[1] = {}, negocios: string[] = ['n1', 'n2']): Promise<Built & { url: string, http: string }> {
  const built = await build(t, opts)
  const { ws, http } = await listen(built.app)
  for (const id of negocios) await addNegocio(built.db.pool, id)
  return { ...built, url: `${ws}/ws`, http }
}

export async function addNegocio (pool: pg.Pool, id: string, zonaHoraria: string | null = null): Promise<void> {
  await pool.query('INSERT INTO negocios (id, nombre, zona_horaria) VALUES ($1, $2, $3)', [id, `Negocio ${id}`, zonaHoraria])
}

export async function addCita (pool: pg.Pool, negocioId: string, fechaHora: Date | string, estado = 'pendiente'): Promise<void> {
  await pool.query('INSERT INTO citas (negocio_id, fecha_hora, estado) VALUES ($1, $2, $3)', [negocioId, fechaHora, estado])
}

export type Message = { type: string, id?: unknown, data?: any }

/** What arrived and was not yet taken, in order; `next` waits for the next one. */
class Inbox<T> {
  private readonly queue: T[] = []
  private waiters: Array<(item: T) => void> = []

  constructor (private readonly what: string) {}

  push (item: T): void {
    const w = this.waiters.shift()
    if (w !== undefined) w(item)
    else this.queue.push(item)
  }

  /** The next item, or a rejection after `ms`. */
  next (ms: number): Promise<T> {
    const item = this.queue.shift()
    if (item !== undefined) return Promise.resolve(item)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter(w => w !== waiter)
        reject(new Error(`no ${this.what} within ${ms} ms`))
      }, ms)
      const waiter = (got: T): void => { clearTimeout(timer); resolve(got) }
      this.waiters.push(waiter)
    })
  }

  /** Resolves true if nothing arrives within `ms`. */
  async silentFor (ms: number): Promise<boolean> {
    if (this.queue.length > 0) return false
    try {
      await this.next(ms)
      return false
    } catch {
      return true
    }
  }
}

/** A real ws client that queues what it receives, so a test can await messages in order. */
export class Client {
  readonly ws: WebSocket
  readonly received: Message[] = []
  private readonly inbox = new Inbox<Message>('message')
  readonly closed: Promise<{ code: number, reason: string }>

  constructor (url: string, options?: WebSocket.ClientOptions, protocols?: string[]) {
    this.ws = protocols === undefined ? new WebSocket(url, options) : new WebSocket(url, protocols, options)
    this.ws.on('message', (data) => {
      const m = JSON.parse(data.toString()) as Message
      this.received.push(m)
      this.inbox.push(m)
    })
    this.closed = new Promise((resolve) => {
      this.ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }))
    })
    this.ws.on('error', () => {})
  }

  static async open (url: string, t: TestLike, options?: WebSocket.ClientOptions, protocols?: string[]): Promise<Client> {
    const c = new Client(url, options, protocols)
    t.teardown(() => c.ws.terminate())
    await new Promise<void>((resolve, reject) => {
      c.ws.once('open', () => resolve())
      c.ws.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { statusCode: res.statusCode })))
      c.ws.once('error', reject)
    })
    return c
  }

  send (message: unknown): void {
    this.ws.send(typeof message === 'string' ? message : JSON.stringify(message))
  }

  /** The next message, or a rejection after `ms`. */
  next (ms = WAIT_MS): Promise<Message> { return this.inbox.next(ms) }

  /** The first message (from the next one on) that matches `pred`; the others before it are consumed. */
  async nextMatching (pred: (m: Message) => boolean, ms = WAIT_MS): Promise<Message> {
    const end = Date.now() + ms
    for (;;) {
      const m = await this.next(Math.max(1, end - Date.now()))
      if (pred(m)) return m
    }
  }

  /** Sends a message and returns the next one. */
  async request (message: unknown, ms?: number): Promise<Message> {
    this.send(message)
    return await this.next(ms)
  }

  /** Resolves true if no message arrives within `ms`. */
  async silentFor (ms: number): Promise<boolean> { return await this.inbox.silentFor(ms) }

  async subscribe (negocioId: string): Promise<Message> {
    const subscribed = await this.request({ type: 'subscribe', data: { channel: `estadisticas:${negocioId}` } })
    if (subscribed.type !== 'subscribed') throw new Error(`expected subscribed, got ${JSON.stringify(subscribed)}`)
    return await this.next()
  }
}

/** One Server-Sent Event as EventSource would dispatch it (`data` parsed as JSON). */
export interface SseEvent { event: string, id: string | undefined, data: any, raw: string }

/**
 * A real HTTP client of GET /sse that parses the stream the way EventSource does (WHATWG rules:
 * fields, comments, CRLF or LF) and queues the events, so a test can await them in order.
 */
export class SseClient {
  readonly status: number
  readonly headers: http.IncomingHttpHeaders
  /** The JSON body of a refusal (non-200). */
  readonly body: any
  readonly events: SseEvent[] = []
  /** Comment lines seen (heartbeats), and the last `retry:` value. */
  comments = 0
  retry: number | undefined
  /** The id EventSource would send as Last-Event-ID. */
  lastEventId = ''
  /** Resolves when the server ends the stream (or the connection drops). */
  readonly ended: Promise<void>
  readonly response: http.IncomingMessage
  private readonly inbox = new Inbox<SseEvent>('event')

  private constructor (res: http.IncomingMessage, body: any) {
    this.response = res
    this.status = res.statusCode ?? 0
    this.headers = res.headers
    this.body = body
    this.ended = new Promise((resolve) => { res.once('close', resolve) })
    if (this.status !== 200) return
    let buffer = ''
    let event = ''
    let data: string[] = []
    let id: string | undefined
    res.setEncoding('utf8')
    res.on('data', (chunk: string) => {
      buffer += chunk
      for (;;) {
        const m = /\r\n|\r|\n/.exec(buffer)
        if (m === null) break
        const line = buffer.slice(0, m.index)
        buffer = buffer.slice(m.index + m[0].length)
        if (line === '') {
          if (id !== undefined) this.lastEventId = id
          if (data.length > 0) {
            const raw = data.join('\n')
            const e: SseEvent = { event: event === '' ? 'message' : event, id: id ?? (this.lastEventId === '' ? undefined : this.lastEventId), data: JSON.parse(raw), raw }
            this.events.push(e)
            this.inbox.push(e)
          }
          event = ''
          data = []
          id = undefined
          continue
        }
        if (line.startsWith(':')) {
          this.comments++
          continue
        }
        const colon = line.indexOf(':')
        const field = colon === -1 ? line : line.slice(0, colon)
        let value = colon === -1 ? '' : line.slice(colon + 1)
        if (value.startsWith(' ')) value = value.slice(1)
        if (field === 'event') event = value
        else if (field === 'data') data.push(value)
        else if (field === 'id') id = value
        else if (field === 'retry' && /^\d+$/.test(value)) this.retry = Number(value)
      }
    })
    res.on('error', () => {})
  }

  /** Opens `url` (http://.../sse?channels=...) and resolves once the response head (and a refusal's body) is in. */
  static async open (url: string, t: TestLike, headers: Record<string, string> = {}): Promise<SseClient> {
    return await new Promise((resolve, reject) => {
      const req = http.get(url, { headers, agent: false }, (res) => {
        if (res.statusCode === 200) {
          const c = new SseClient(res, undefined)
          t.teardown(() => { req.destroy() })
          resolve(c)
          return
        }
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (d: string) => { text += d })
        res.on('end', () => {
          let body: unknown = text
          try { body = JSON.parse(text) } catch {}
          resolve(new SseClient(res, body))
        })
      })
      req.on('error', reject)
    })
  }

  /** The next event, or a rejection after `ms`. */
  next (ms = WAIT_MS): Promise<SseEvent> { return this.inbox.next(ms) }

  /** Resolves true if no event arrives within `ms`. */
  async silentFor (ms: number): Promise<boolean> { return await this.inbox.silentFor(ms) }

  close (): void { this.response.destroy() }
}

/** An HTTP upgrade attempt that reports the status and body when the server refuses it. */
export async function handshake (url: string, headers: Record<string, string> = {}, protocols?: string[]): Promise<{ status: number, body: any }> {
  return await new Promise((resolve, reject) => {
    const ws = protocols === undefined ? new WebSocket(url, { headers }) : new WebSocket(url, protocols, { headers })
    ws.on('open', () => { ws.terminate(); resolve({ status: 101, body: null }) })
    ws.on('unexpected-response', (_req, res) => {
      let body = ''
      res.on('data', (c: Buffer) => { body += c.toString() })
      res.on('end', () => {
        let parsed: unknown = body
        try { parsed = JSON.parse(body) } catch {}
        resolve({ status: res.statusCode ?? 0, body: parsed })
      })
    })
    ws.on('error', (err) => { if (!('statusCode' in err)) reject(err) })
  })
}

export interface ServerProcess {
  child: ChildProcess
  /** Everything the process wrote to stdout and stderr so far. */
  output: () => string
  exited: Promise<number | null>
}

const projectRoot = new URL('../', import.meta.url).pathname

/**
 * How a child process runs TypeScript. Under tap: tap's own loader and its coverage hooks (NODE_OPTIONS
 * and the _TAPJS_PROCESSINFO_* variables), so the child's code counts in the coverage report like the
 * test process's own. Elsewhere: tsx, as `npm start` would run the sources without a build.
 */
export function childRuntime (): { execArgv: string[], env: Record<string, string> } {
  const tapLoader = process.execArgv.filter(a => a.includes('@tapjs/typescript') || a === '--enable-source-maps')
  if (tapLoader.length === 0) return { execArgv: ['--import', 'tsx'], env: {} }
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && (/^_TAPJS_PROCESSINFO_/.test(k) || /^TS_NODE_/.test(k) || k === 'NODE_OPTIONS')) env[k] = v
  }
  return { execArgv: tapLoader, env }
}

/** The port a server process announces in its log, or 0 if it exited (or stayed silent 30 s) first. */
export async function listeningPort (p: ServerProcess): Promise<number> {
  let port = 0
  await waitFor(() => {
    port = Number(/Server listening at http:\/\/127\.0\.0\.1:(\d+)/.exec(p.output())?.[1] ?? 0)
    return port !== 0 || p.child.exitCode !== null
  }, 30_000).catch(() => {})
  return port
}

/** Runs server.ts as `npm start` would (from the sources, so no build is needed), with only `env`. */
export function runServer (env: Record<string, string>, opts: { nofile?: number } = {}): ServerProcess {
  const runtime = childRuntime()
  const node = [process.execPath, ...runtime.execArgv, 'server.ts']
  // With `nofile`, under that open-files limit (soft and hard), as a deployment's ulimit -n sets it.
  const [command, ...args] = opts.nofile === undefined ? node : ['prlimit', `--nofile=${opts.nofile}:${opts.nofile}`, ...node]
  const child = spawn(command as string, args, {
    cwd: projectRoot,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...runtime.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let out = ''
  child.stdout?.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr?.on('data', (d: Buffer) => { out += d.toString() })
  const exited = new Promise<number | null>(resolve => child.on('exit', code => {
    // The demo banner prints its tokens on purpose, outside the JSON log: only log lines count.
    for (const line of out.split('\n')) if (line.startsWith('{"level"')) collectLogLine(line)
    resolve(code)
  }))
  return { child, output: () => out, exited }
}
