/**
 * Scale-out (issue: compute once per cluster, every core, screens within 20 ms):
 *
 * - fleet: 1, 3 and 5 instances on one database, 200 commits/s plus notifies for half of them: the
 *   stats queries the fleet sends, and commit-to-subscriber latency on every instance;
 * - capture idle load: what an idle capture leader costs PostgreSQL;
 * - noisy negocio: one negocio written 2,000 times a second next to 100 ordinary ones;
 * - workers: sockets held by WORKERS=2 on one machine, fan-out CPU per delivery with 1 and 2 workers;
 * - full process: 24,000 clients offered to one process whose open-files limit is 20,000.
 *
 * The workers and full-process scenarios run the real server (dist-bench/server.js) and hold their
 * sockets in load-generator processes of their own (bench/holder.ts).
 */
import { execFile, fork, spawn, type ChildProcess } from 'node:child_process'
import { createServer, type AddressInfo } from 'node:net'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import type pg from 'pg'
import { closeAll, connectAll, notify, Tracker, type Channel, type Client } from './clients.js'
import { countsBySql } from './capture.js'
import { negocioId, withDatabase } from './db.js'
import type { HolderOpened, HolderReached, HolderReply, HolderRequest } from './holder.js'
import { CPU, cpuMs, now, rssKiB, sleep, until, type Server } from './lib.js'
import { change, channelOf, latencyMetrics, tokens, type Context, type Metric, type StandaloneScenario } from './scenarios.js'

const run = promisify(execFile)
const here = fileURLToPath(new URL('.', import.meta.url))
const env = process.env

const RATE = 200
const METRICS_TOKEN = 'bench-metrics-token-0123456789'

async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo
      s.close(() => resolve(port))
    })
  })
}
const NEGOCIOS = 100

/** Sum of the stats queries a set of in-process servers sent so far. */
async function queriesOf (servers: Server[]): Promise<number> {
  let sum = 0
  for (const s of servers) sum += (await s.gauges()).queries
  return sum
}

/** Waits until the servers send no stats query for `quietMs` (they caught up), at most `timeoutMs`. */
async function quiet (servers: Server[], quietMs = 500, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs
  let last = await queriesOf(servers)
  while (Date.now() < end) {
    await sleep(quietMs)
    const q = await queriesOf(servers)
    if (q === last) return
    last = q
  }
}

/**
 * `rate` INSERT commits per second for `seconds`, round-robin over `channels`, one chain per negocio
 * (so a negocio's commits resolve in order and change i made total_citas = base + i + 1); after each
 * commit `afterCommit` may add a notify.
 */
async function commits (db: pg.Pool, channels: Channel[], rate: number, seconds: number, afterCommit?: (k: number, ch: Channel) => Promise<void>) {
  const chains = new Map<Channel, Promise<void>>()
  let failures = 0
  let inflight = 0
  let k = 0
  const total = rate * seconds
  const t0 = now()
  let lastAt = t0
  const launch = (ch: Channel, i: number): void => {
    inflight++
    chains.set(ch, (chains.get(ch) ?? Promise.resolve()).then(async () => {
      await change(db, ch.negocio)
      lastAt = now()
      ch.changedAt.push(lastAt)
      await afterCommit?.(i, ch)
    }).catch(() => { failures++ }).finally(() => { inflight-- }))
  }
  while (k < total && now() - t0 < seconds * 1000 + 10_000) {
    const due = Math.min(total, Math.floor((now() - t0) / 1000 * rate) + 1)
    // eslint-disable-next-line no-unmodified-loop-condition -- inflight changes in the callbacks of launch()
    while (k < due && inflight < 2000) launch(channels[k % channels.length] as Channel, k++)
    await sleep(1)
  }
  await until(() => inflight === 0, 30_000)
  return { commits: channels.reduce((a, c) => a + c.changedAt.length, 0), writeSeconds: (lastAt - t0) / 1000, failures }
}

/** Subscribers whose last figures differ from a SQL count now. */
async function mismatches (db: pg.Pool, clients: Client[], last: Map<Client, Record<string, number>>): Promise<number> {
  const counted = await countsBySql(db, [...new Set(clients.map((c) => c.channel.negocio))])
  return clients.filter((c) => {
    const got = last.get(c)
    const want = counted.get(c.channel.negocio) as Record<string, number> | undefined
    return got === undefined || want === undefined || ['citas_hoy', 'total_citas', 'citas_completadas', 'citas_canceladas'].some((k) => got[k] !== want[k])
  }).length
}

function recordLast (clients: Client[]): Map<Client, Record<string, number>> {
  const last = new Map<Client, Record<string, number>>()
  for (const c of clients) {
    c.ws.on('message', (data: Buffer) => {
      const m = JSON.parse(data.toString()) as { type: string, data: Record<string, number> }
      if (m.type === 'stats') last.set(c, m.data)
    })
  }
  return last
}

const latencies = (tracker: Tracker): number[] => [...tracker.latencies, ...new Array<number>(tracker.early).fill(0)]

export const fleet: StandaloneScenario = {
  name: 'fleet',
  standalone: true,
  describe: (ctx) => `BENCH_FLEET (1,3,5) citas-live instances with change capture on one database and the PostgreSQL bus, each with one subscriber to each of ${NEGOCIOS} negocios; ${RATE} INSERT commits/s in SQL for ${ctx.seconds} s round-robin over them, and after every second commit a /notify/cita for it to a random instance, as a REST API would. Stats queries summed over the instances (what the database pays), commit-to-subscriber latency over every instance's subscribers, final figures against a SQL count`,
  async run (ctx) {
    const sizes = (env.BENCH_FLEET ?? '1,3,5').split(',').map(Number)
    const metrics: Metric[] = []
    let single = Number.NaN
    for (const n of sizes) {
      const servers: Server[] = []
      try {
        for (let i = 0; i < n; i++) servers.push(await ctx.startServer('citas-live', { databaseUrl: withDatabase(ctx.adminUrl, ctx.dbName), changeCapture: true }))
        const channels = await Promise.all(Array.from({ length: NEGOCIOS }, async (_, i) => await channelOf(ctx.db, negocioId(i))))
        const tracker = new Tracker()
        const clients: Client[] = []
        for (const s of servers) clients.push(...(await connectAll({ port: s.port, tokens: tokens(ctx, NEGOCIOS, channels), channels, concurrency: 100, timeoutMs: 30_000, tracker })).clients)
        const last = recordLast(clients)
        // The leader's first '*' resync and the instances' first announcements are over before measuring.
        await sleep(2000)
        await quiet(servers)
        tracker.reset()
        // A stall of the load generator's own event loop delays what it timestamps: shown beside the latencies.
        const loadLag = monitorEventLoopDelay({ resolution: 10 })
        loadLag.enable()
        const q0 = await queriesOf(servers)
        const ports = servers.map((s) => s.port)
        let notifyFailures = 0
        const done = await commits(ctx.db, channels, RATE, ctx.seconds, async (k, ch) => {
          if (k % 2 !== 0) return
          const status = await notify(ports[Math.floor(Math.random() * ports.length)] as number, ctx.serviceToken, ch.negocio)
          if (status !== 200) notifyFailures++
        })
        await until(() => clients.every((c) => c.last >= c.channel.base + c.channel.changedAt.length), 30_000)
        loadLag.disable()
        await quiet(servers)
        const perSecond = (await queriesOf(servers) - q0) / done.writeSeconds
        if (n === sizes[0]) single = perSecond
        const fleetOf = `${n} instance${n === 1 ? '' : 's'}`
        const [p50, , p99] = latencyMetrics(latencies(tracker), `${fleetOf}: commit to subscriber`) as [Metric, Metric, Metric]
        metrics.push(
          { name: `${fleetOf}: commits/s achieved`, unit: '/s', value: done.commits / done.writeSeconds },
          { name: `${fleetOf}: stats queries/s, all instances`, unit: '/s', value: perSecond, better: 'lower' },
          ...(n === sizes[0] ? [] : [{ name: `${n} instances: stats queries against ${sizes[0] ?? 1} instance`, unit: '×', value: perSecond / single, better: 'lower' as const, goal: { atMost: 1.2 } }]),
          { ...p50, goal: { atMost: 20 } },
          { ...p99, goal: { atMost: 60 } },
          { name: `${fleetOf}: load generator's event loop delay, max`, unit: 'ms', value: loadLag.max / 1e6, better: 'lower' },
          { name: `${fleetOf}: failed commits and notifies`, unit: '', value: done.failures + notifyFailures, goal: { atMost: 0 } },
          { name: `${fleetOf}: final figures not equal to a SQL count`, unit: '', value: await mismatches(ctx.db, clients, last), goal: { atMost: 0 } }
        )
        await closeAll(clients)
      } finally {
        for (const s of servers) await s.stop()
      }
    }
    return metrics
  }
}

/** CPU time of each process (PostgreSQL backends, server processes), in ms; one that has exited is left out. */
function backendsCpuMs (pids: number[]): Map<number, number> {
  const out = new Map<number, number>()
  for (const pid of pids) {
    try { out.set(pid, cpuMs(pid)) } catch {}
  }
  return out
}

/** CPU the backends present at both readings used between them, in ms. */
function backendsCpuDelta (before: Map<number, number>, after: Map<number, number>): number {
  let sum = 0
  for (const [pid, ms] of after) sum += ms - (before.get(pid) ?? ms)
  return sum
}

export const captureIdle: StandaloneScenario = {
  name: 'capture idle load',
  standalone: true,
  describe: (ctx) => `one citas-live instance leading change capture on the bench database, nothing written for ${ctx.seconds} s: CPU of every PostgreSQL backend it holds (its pool and its session, from /proc; PostgreSQL on this machine) and of the server`,
  async run (ctx) {
    const server = await ctx.startServer('citas-live', { databaseUrl: withDatabase(ctx.adminUrl, ctx.dbName), changeCapture: true })
    try {
      await sleep(3000)
      const { rows } = await ctx.db.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE \'citas-live%\'')
      // The server's pool and session only (they set application_name); backends of earlier scenarios may still be exiting.
      const pids = rows.map((r) => r.pid)
      const db0 = backendsCpuMs(pids)
      const s0 = server.cpuMs()
      const t0 = now()
      await sleep(ctx.seconds * 1000)
      const ms = now() - t0
      return [
        { name: 'PostgreSQL CPU while idle (capture leader polling)', unit: '% of a core', value: backendsCpuDelta(db0, backendsCpuMs(pids)) / ms * 100, better: 'lower', goal: { atMost: 1 } },
        { name: 'server CPU while idle', unit: '% of a core', value: (server.cpuMs() - s0) / ms * 100, better: 'lower' },
        { name: 'backends measured', unit: '', value: pids.length }
      ]
    } finally {
      await server.stop()
    }
  }
}

const NOISY_RATE = 2000

export const noisyNegocio: StandaloneScenario = {
  name: 'noisy negocio',
  standalone: true,
  describe: (ctx) => `one citas-live instance with change capture; one subscriber to each of ${NEGOCIOS} negocios and 20 to a noisy one. ${RATE} commits/s over the ${NEGOCIOS} for ${ctx.seconds} s, then the same while pgbench writes the noisy negocio at ${NOISY_RATE} commits/s, and (the machine's own share) while it writes as often to a copy of citas that nothing captures: the ordinary negocios' commit-to-subscriber latency in each phase, and what the noisy one's subscribers get`,
  async run (ctx) {
    const server = await ctx.startServer('citas-live', { databaseUrl: withDatabase(ctx.adminUrl, ctx.dbName), changeCapture: true })
    const dir = mkdtempSync(path.join(os.tmpdir(), 'citas-live-noisy-'))
    try {
      const noisy = await channelOf(ctx.db, negocioId(NEGOCIOS))
      const noisyTracker = new Tracker()
      const noisyClients = (await connectAll({ port: server.port, tokens: tokens(ctx, 20, [noisy]), channels: [noisy], concurrency: 20, timeoutMs: 30_000, tracker: noisyTracker })).clients
      const noisyLast = recordLast(noisyClients)
      // 'captured': pgbench writes the noisy negocio; 'uncaptured': the same load on a table with no trigger.
      const phase = async (noise: 'none' | 'captured' | 'uncaptured'): Promise<{ p50: number, p99: number, noisyMessages: number, noisyCommits: number }> => {
        const channels = await Promise.all(Array.from({ length: NEGOCIOS }, async (_, i) => await channelOf(ctx.db, negocioId(i))))
        const tracker = new Tracker()
        const conn = await connectAll({ port: server.port, tokens: tokens(ctx, NEGOCIOS, channels), channels, concurrency: 100, timeoutMs: 30_000, tracker })
        await sleep(1000)
        tracker.reset()
        const before = noisyTracker.deliveries
        const noisyBase = (await ctx.db.query<{ n: number }>('SELECT count(*)::int AS n FROM citas WHERE negocio_id = $1', [noisy.negocio])).rows[0]?.n ?? 0
        let writer: Promise<unknown> = Promise.resolve()
        if (noise !== 'none') {
          const script = path.join(dir, 'noisy.sql')
          const table = noise === 'captured' ? 'citas' : 'citas_sin_captura'
          await ctx.db.query('CREATE TABLE IF NOT EXISTS citas_sin_captura (LIKE citas INCLUDING ALL)')
          writeFileSync(script, `INSERT INTO ${table} (negocio_id, fecha_hora, estado) VALUES ('${noisy.negocio}', now(), 'pendiente');\n`)
          writer = run('pgbench', ['-n', '-f', script, '-c', '8', '-j', '2', '-R', String(NOISY_RATE), '-T', String(ctx.seconds + 2), '-M', 'prepared', withDatabase(ctx.adminUrl, ctx.dbName)], { timeout: (ctx.seconds + 60) * 1000 })
          await sleep(1000)
        }
        await commits(ctx.db, channels, RATE, ctx.seconds)
        await writer
        await until(() => conn.clients.every((c) => c.last >= c.channel.base + c.channel.changedAt.length), 30_000)
        const noisyCommits = ((await ctx.db.query<{ n: number }>('SELECT count(*)::int AS n FROM citas WHERE negocio_id = $1', [noisy.negocio])).rows[0]?.n ?? 0) - noisyBase
        await closeAll(conn.clients)
        const l = latencies(tracker).sort((a, b) => a - b)
        const at = (q: number): number => l[Math.min(l.length - 1, Math.floor(q * l.length))] ?? Number.NaN
        return { p50: at(0.5), p99: at(0.99), noisyMessages: (noisyTracker.deliveries - before) / noisyClients.length, noisyCommits }
      }
      const calm = await phase('none')
      const noisy2 = await phase('captured')
      const machine = await phase('uncaptured')
      await sleep(1000)
      return [
        { name: 'ordinary negocios, alone: commit to subscriber p50', unit: 'ms', value: calm.p50 },
        { name: 'ordinary negocios, alone: commit to subscriber p99', unit: 'ms', value: calm.p99 },
        { name: `ordinary negocios, beside ${NOISY_RATE} commits/s: commit to subscriber p50`, unit: 'ms', value: noisy2.p50 },
        { name: `ordinary negocios, beside ${NOISY_RATE} commits/s: commit to subscriber p99`, unit: 'ms', value: noisy2.p99 },
        { name: 'p99 beside the noisy negocio against alone', unit: '×', value: noisy2.p99 / calm.p99, better: 'lower', goal: { atMost: 1.2 } },
        { name: `the machine's share: p99 beside ${NOISY_RATE} commits/s that nothing captures, against alone`, unit: '×', value: machine.p99 / calm.p99, better: 'lower' },
        { name: 'noisy negocio: commits', unit: '', value: noisy2.noisyCommits },
        { name: 'noisy negocio: stats messages per subscriber', unit: '', value: noisy2.noisyMessages },
        { name: 'noisy negocio: subscribers whose final figures differ from a SQL count', unit: '', value: await mismatches(ctx.db, noisyClients, noisyLast), goal: { atMost: 0 } }
      ]
    } finally {
      rmSync(dir, { recursive: true, force: true })
      await server.stop()
    }
  }
}

/** The real server (dist-bench/server.js) in a process of its own, with WORKERS. */
class ProcessServer {
  private constructor (readonly child: ChildProcess, readonly port: number) {}

  static async start (ctx: Context, workers: number): Promise<ProcessServer> {
    const port = await freePort()
    // On every core (the bench itself is pinned to one): using them is what WORKERS is for.
    const cores = `0-${os.cpus().length - 1}`
    const [cmd, args] = CPU.taskset ? ['taskset', ['-c', cores, process.execPath, path.join(here, '..', 'server.js')]] : [process.execPath, [path.join(here, '..', 'server.js')]]
    const child = spawn(cmd as string, args as string[], {
      env: {
        PATH: env.PATH ?? '',
        DATABASE_URL: withDatabase(ctx.adminUrl, ctx.dbName),
        JWT_SECRET: ctx.secret,
        PORT: String(port),
        HOST: '127.0.0.1',
        // A line per request would measure the logger: warnings only.
        LOG_LEVEL: 'warn',
        METRICS_TOKEN,
        WORKERS: String(workers),
        WS_MAX_CONNECTIONS_PER_USER: '0',
        NOTIFY_RATE_MAX: '0'
      },
      stdio: ['ignore', 'inherit', 'inherit']
    })
    const server = new ProcessServer(child, port)
    // Ready once every worker is an instance on the bus (each says so in the cluster's metrics).
    const ready = await until(() => {
      server.metrics().then((text) => { server.workersUp = sum([...text.matchAll(/^citas_live_change_capture_info\{[^}]*\} (\d+)$/gm)].map((m) => Number(m[1]))) }, () => {})
      return server.workersUp >= workers || child.exitCode !== null
    }, 60_000, 200)
    if (!ready || child.exitCode !== null) throw new Error(`server with WORKERS=${workers} did not start`)
    return server
  }

  private workersUp = 0

  async metrics (): Promise<string> {
    const res = await fetch(`http://127.0.0.1:${this.port}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } })
    return await res.text()
  }

  /** The primary and its workers. */
  pids (): number[] {
    const pid = this.child.pid as number
    const children = readdirSync('/proc').filter((d) => /^\d+$/.test(d)).filter((d) => {
      try {
        const stat = readFileSync(`/proc/${d}/stat`, 'utf8')
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid
      } catch {
        return false
      }
    }).map(Number)
    return [pid, ...children]
  }

  cpuMs (): number { return [...backendsCpuMs(this.pids()).values()].reduce((a, b) => a + b, 0) }
  rssKiB (): number { return this.pids().reduce((sum, pid) => { try { return sum + rssKiB(pid) } catch { return sum } }, 0) }

  async stop (): Promise<void> {
    if (this.child.exitCode !== null) return
    const ended = new Promise<void>((resolve) => this.child.once('exit', () => resolve()))
    this.child.kill('SIGTERM')
    const timer = setTimeout(() => { for (const pid of this.pids()) process.kill(pid, 'SIGKILL') }, 30_000)
    await ended
    clearTimeout(timer)
  }
}

/** A load-generator process holding sockets (bench/holder.ts). */
class Holder {
  private constructor (private readonly child: ChildProcess) {}

  static start (): Holder {
    return new Holder(fork(path.join(here, 'holder.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }))
  }

  private async ask<R extends HolderReply> (req: HolderRequest, type: R['type']): Promise<R> {
    return await new Promise((resolve, reject) => {
      const onMessage = (reply: HolderReply): void => {
        if (reply.type !== type) return
        this.child.off('message', onMessage)
        resolve(reply as R)
      }
      this.child.on('message', onMessage)
      this.child.once('exit', () => reject(new Error('holder exited')))
      this.child.send(req)
    })
  }

  async open (url: string, negocio: string, count: number, localAddress: string): Promise<HolderOpened> {
    return await this.ask({ type: 'open', url, negocio, count, localAddress, concurrency: 200, timeoutMs: 300_000 }, 'opened')
  }

  async expect (total: number): Promise<HolderReached> { return await this.ask({ type: 'expect', total, timeoutMs: 60_000 }, 'reached') }

  async close (): Promise<void> {
    await this.ask({ type: 'close' }, 'closed').catch(() => {})
  }
}

/** Opens `perHolder` sockets from each source address, all subscribed to `negocio`. */
async function hold (server: ProcessServer, ctx: Context, negocio: string, perHolder: number[]): Promise<{ holders: Holder[], opened: HolderOpened[] }> {
  const url = `ws://127.0.0.1:${server.port}/ws?token=${ctx.userToken('holder', [negocio])}`
  const holders = perHolder.map(() => Holder.start())
  const opened = await Promise.all(holders.map(async (h, i) => await h.open(url, negocio, perHolder[i] as number, `127.0.0.${i + 1}`)))
  return { holders, opened }
}

const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0)

export const workersSockets: StandaloneScenario = {
  name: 'workers: sockets held',
  standalone: true,
  describe: () => `the server with WORKERS=2 (each process under the machine's open-files limit of ${os.userInfo().username === 'root' ? 'root\'s ' : ''}ulimit -n); BENCH_SOCKETS (38,000) idle WebSocket subscribers to one negocio from two load-generator processes (two source addresses), each verified by its first stats; then one write in SQL, which every socket must receive`,
  async run (ctx) {
    const total = Number(env.BENCH_SOCKETS ?? '38000')
    const server = await ProcessServer.start(ctx, 2)
    let holders: Holder[] = []
    try {
      const channel = await channelOf(ctx.db, negocioId(0))
      const t0 = now()
      const held = await hold(server, ctx, channel.negocio, [Math.ceil(total / 2), Math.floor(total / 2)])
      holders = held.holders
      const connectSeconds = (now() - t0) / 1000
      const accepted = sum(held.opened.map((o) => o.accepted))
      const rss = server.rssKiB()
      await change(ctx.db, channel.negocio)
      const reached = await Promise.all(holders.map(async (h) => await h.expect(channel.base + 1)))
      const refused = held.opened.map((o) => JSON.stringify(o.refused)).join(' ')
      ctx.print(`Refused: ${refused}; workers: ${server.pids().length - 1}.`)
      return [
        { name: 'sockets offered', unit: '', value: total },
        { name: 'sockets held and verified (first stats received)', unit: '', value: accepted, goal: { atLeast: Math.min(total, 38_000) } },
        { name: 'time to connect and subscribe them all', unit: 's', value: connectSeconds },
        { name: 'sockets that received the next write', unit: '', value: sum(reached.map((r) => r.reached)), goal: { atLeast: accepted } },
        { name: 'time for the write to reach them all', unit: 'ms', value: Math.max(...reached.map((r) => r.ms)) },
        { name: 'RSS of the primary and workers', unit: 'MiB', value: rss / 1024 }
      ]
    } finally {
      for (const h of holders) await h.close()
      await server.stop()
    }
  }
}

export const workersFanout: StandaloneScenario = {
  name: 'workers: fan-out CPU per delivery',
  standalone: true,
  describe: (ctx) => `the server with WORKERS=1, then WORKERS=2, alternately over BENCH_ROUNDS (3) rounds: 10,000 WebSocket subscribers to one negocio from two load-generator processes, then ${Math.max(20, ctx.seconds * 5)} writes in SQL 200 ms apart (change capture pushes each): CPU of the primary and workers per delivered message, median over rounds`,
  async run (ctx) {
    const rounds = ctx.rounds ?? 3
    const perDelivery = new Map<number, number[]>([[1, []], [2, []]])
    const writes = Math.max(20, ctx.seconds * 5)
    for (let r = 0; r < rounds; r++) {
      for (const workers of r % 2 === 0 ? [1, 2] : [2, 1]) {
        const server = await ProcessServer.start(ctx, workers)
        let holders: Holder[] = []
        try {
          const channel = await channelOf(ctx.db, negocioId(1))
          const held = await hold(server, ctx, channel.negocio, [5000, 5000])
          holders = held.holders
          const accepted = sum(held.opened.map((o) => o.accepted))
          await sleep(2000)
          const cpu0 = server.cpuMs()
          for (let i = 0; i < writes; i++) {
            await change(ctx.db, channel.negocio)
            await sleep(200)
          }
          const reached = await Promise.all(holders.map(async (h) => await h.expect(channel.base + writes)))
          const cpu = server.cpuMs() - cpu0
          if (sum(reached.map((x) => x.reached)) !== accepted) ctx.print(`round ${r}, ${workers} worker(s): ${sum(reached.map((x) => x.reached))} of ${accepted} sockets caught up`)
          perDelivery.get(workers)?.push(cpu * 1000 / (accepted * writes))
        } finally {
          for (const h of holders) await h.close()
          await server.stop()
        }
      }
    }
    const med = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[s.length >> 1] ?? Number.NaN }
    const one = med(perDelivery.get(1) ?? [])
    const two = med(perDelivery.get(2) ?? [])
    ctx.print(`Per round (µs per delivery): 1 worker ${(perDelivery.get(1) ?? []).map((v) => v.toFixed(2)).join(', ')}; 2 workers ${(perDelivery.get(2) ?? []).map((v) => v.toFixed(2)).join(', ')}.`)
    return [
      { name: '1 worker: server CPU per delivery', unit: 'µs', value: one, better: 'lower' },
      { name: '2 workers: server CPU per delivery', unit: 'µs', value: two, better: 'lower' },
      { name: '2 workers against 1', unit: '×', value: two / one, better: 'lower', goal: { atMost: 1.15 } }
    ]
  }
}

export const fullProcess: StandaloneScenario = {
  name: 'full process',
  standalone: true,
  describe: () => 'the server with WORKERS=1 under an open-files limit of 20,000: 24,000 WebSocket clients offered from two load-generator processes, all subscribing to one negocio; then one write in SQL and a /notify/cita',
  async run (ctx) {
    const server = await ProcessServer.start(ctx, 1)
    let holders: Holder[] = []
    try {
      const channel = await channelOf(ctx.db, negocioId(2))
      const held = await hold(server, ctx, channel.negocio, [12_000, 12_000])
      holders = held.holders
      const accepted = sum(held.opened.map((o) => o.accepted))
      const refused = (code: string): number => sum(held.opened.map((o) => o.refused[code] ?? 0))
      ctx.print(`Refused: ${held.opened.map((o) => JSON.stringify(o.refused)).join(' ')}.`)
      await change(ctx.db, channel.negocio)
      const status = await notify(server.port, ctx.serviceToken, channel.negocio)
      const reached = await Promise.all(holders.map(async (h) => await h.expect(channel.base + 1)))
      return [
        { name: 'clients offered', unit: '', value: 24_000 },
        { name: 'clients accepted', unit: '', value: accepted },
        { name: 'refused with 503 and Retry-After', unit: '', value: refused('503') },
        { name: 'connections closed at once (past the capacity and the requests in flight)', unit: '', value: sum(held.opened.map((o) => sum(Object.entries(o.refused).filter(([k]) => k !== '503').map(([, v]) => v)))) },
        { name: 'accepted clients that received the write', unit: '', value: sum(reached.map((r) => r.reached)), goal: { atLeast: accepted } },
        { name: '/notify/cita status while full', unit: '', value: status, goal: { atMost: 200 } }
      ]
    } finally {
      for (const h of holders) await h.close()
      await server.stop()
    }
  }
}

export const scaleOutScenarios = [fleet, captureIdle, noisyNegocio, workersSockets, workersFanout, fullProcess]
