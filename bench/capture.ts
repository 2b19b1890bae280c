/**
 * Change capture: what the trigger the migrations put on `citas` costs the applications that write
 * it (write path), and how fast a write made in SQL alone reaches a dashboard (capture latency).
 * Both measure whatever db/migrations defines at the time they run.
 */
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import pg from 'pg'
import { closeAll, connectAll, Tracker, type Channel, type Client } from './clients.js'
import { citasTriggers, createBenchDatabase, dropBenchDatabase, dropCitasTriggers, negocioId } from './db.js'
import { now, sleep, until, type Server } from './lib.js'
import { allHold, change, channelOf, latencyMetrics, tokens, type Context, type Metric, type ServerScenario, type StandaloneScenario } from './scenarios.js'

const run = promisify(execFile)

/** Write path: pgbench clients, negocios written to, citas already in each database. */
const WRITERS = 16
const WRITE_NEGOCIOS = 100
const WRITE_CITAS = 100_000
const WRITE_ROUNDS = 5

/** One transaction: one INSERT of a cita for a random negocio, as a booking API makes it. */
const INSERT_SCRIPT = `\\set n random(0, ${WRITE_NEGOCIOS - 1})
INSERT INTO citas (negocio_id, fecha_hora, estado) VALUES ('n' || lpad(:n::text, 4, '0'), now(), 'pendiente');
`

interface PgbenchResult { tps: number, transactions: number, failed: number }

/** Runs pgbench with the insert script for `seconds`; TPS excludes the connection set-up. */
async function pgbench (url: string, script: string, seconds: number): Promise<PgbenchResult> {
  const args = ['-n', '-f', script, '-c', String(WRITERS), '-j', '2', '-T', String(seconds), '-M', 'prepared', url]
  const { stdout } = await run('pgbench', args, { timeout: (seconds + 60) * 1000, env: { ...process.env, PGCONNECT_TIMEOUT: '10' } })
  const num = (re: RegExp): number => {
    const m = re.exec(stdout)
    return m === null ? Number.NaN : Number(m[1])
  }
  const tps = num(/tps = ([\d.]+) \(without initial connection time\)/)
  if (!Number.isFinite(tps)) throw new Error(`pgbench printed no TPS:\n${stdout}`)
  return {
    tps,
    transactions: num(/number of transactions actually processed: (\d+)/),
    // pgbench 15 prints it; older ones stop at the first failure instead.
    failed: Number.isFinite(num(/number of failed transactions: (\d+)/)) ? num(/number of failed transactions: (\d+)/) : 0
  }
}

/** A flushed checkpoint before each run, so one side does not pay for the WAL the other wrote. */
async function checkpoint (adminUrl: string): Promise<void> {
  const admin = new pg.Client({ connectionString: adminUrl })
  await admin.connect()
  try {
    await admin.query('CHECKPOINT')
  } catch {
    // Not a superuser (nor pg_checkpoint): run without.
  } finally {
    await admin.end()
  }
}

/** Resolves once the server has run no stats query for `quietMs` (it has caught up), or after `timeoutMs`. */
async function settled (server: Server, quietMs = 300, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs
  let last = (await server.gauges()).queries
  while (Date.now() < end) {
    await sleep(quietMs)
    const q = (await server.gauges()).queries
    if (q === last) return
    last = q
  }
}

interface Side {
  label: 'capture' | 'no capture'
  url: string
  tps: number[]
  failed: number
  server?: Server
  pool?: pg.Pool
  clients: Client[]
  tracker: Tracker
}

const fmtTps = (v: number): string => Math.round(v).toLocaleString('en-US')

function median (values: number[]): number {
  const v = [...values].sort((a, b) => a - b)
  const mid = v.length >> 1
  return v.length === 0 ? Number.NaN : v.length % 2 === 1 ? v[mid] as number : ((v[mid - 1] as number) + (v[mid] as number)) / 2
}

async function writePath (ctx: Context, withServer: boolean): Promise<Metric[]> {
  const seconds = Math.min(10, ctx.seconds)
  const warmSeconds = Math.min(5, ctx.seconds)
  const names = [`${ctx.dbName}_w_capture`, `${ctx.dbName}_w_none`] as const
  const dir = mkdtempSync(path.join(os.tmpdir(), 'citas-live-bench-'))
  const script = path.join(dir, 'insert.sql')
  writeFileSync(script, INSERT_SCRIPT)
  const sides: Side[] = []
  try {
    for (const [i, label] of (['capture', 'no capture'] as const).entries()) {
      const url = await createBenchDatabase(ctx.adminUrl, names[i] as string, WRITE_NEGOCIOS, WRITE_CITAS)
      sides.push({ label, url, tps: [], failed: 0, clients: [], tracker: new Tracker() })
    }
    const [capture, none] = sides as [Side, Side]
    const dropped = await dropCitasTriggers(none.url)
    const kept = await citasTriggers(capture.url)
    ctx.print(`Triggers on citas: capture database ${kept.length === 0 ? 'none' : kept.join(', ')} (as the migrations define them); no-capture database none (dropped ${dropped.length}).`)
    ctx.print()
    if (withServer) {
      // The same server with the same dashboards on both sides: on the no-capture side it hears of
      // no change, so what the ratio prices is the capture and the recomputes it causes.
      for (const side of sides) {
        side.server = await ctx.startServer('citas-live', { databaseUrl: side.url, changeCapture: true })
        side.pool = new pg.Pool({ connectionString: side.url, max: 4 })
        side.pool.on('error', () => {})
        const pool = side.pool
        const channels = await Promise.all(Array.from({ length: WRITE_NEGOCIOS }, async (_, i) => await channelOf(pool, negocioId(i))))
        const conn = await connectAll({ port: side.server.port, tokens: tokens(ctx, WRITE_NEGOCIOS, channels), channels, concurrency: 100, timeoutMs: 30_000, tracker: side.tracker })
        side.clients = conn.clients
        if (conn.failed > 0) throw new Error(`${conn.failed} subscribers of the ${side.label} server failed to connect`)
      }
    }
    const once = async (side: Side, secs: number): Promise<PgbenchResult> => {
      await checkpoint(ctx.adminUrl)
      const r = await pgbench(side.url, script, secs)
      if (side.server !== undefined) await settled(side.server)
      return r
    }
    for (const side of sides) await once(side, warmSeconds)
    const q0 = await Promise.all(sides.map(async (s) => s.server === undefined ? 0 : (await s.server.gauges()).queries))
    const cpu0 = sides.map((s) => s.server?.cpuMs() ?? 0)
    for (const side of sides) side.tracker.reset()
    const ratios: number[] = []
    for (let round = 0; round < WRITE_ROUNDS; round++) {
      const order = round % 2 === 0 ? [capture, none] : [none, capture]
      for (const side of order) {
        const r = await once(side, seconds)
        side.tps.push(r.tps)
        side.failed += r.failed
      }
      const ratio = (capture.tps[round] as number) / (none.tps[round] as number)
      ratios.push(ratio)
      ctx.print(`- round ${round + 1} (${order.map((s) => s.label).join(', then ')}): capture ${fmtTps(capture.tps[round] as number)} TPS, no capture ${fmtTps(none.tps[round] as number)} TPS, ratio ${ratio.toFixed(2)}`)
    }
    ctx.print()
    const metrics: Metric[] = [
      { name: 'TPS, capture', unit: '/s', value: median(capture.tps), better: 'higher' },
      { name: 'TPS, no capture', unit: '/s', value: median(none.tps), better: 'higher' },
      // The requirement is on the trigger's own cost (no server). With servers, the capture side
      // also runs a stats query for (nearly) every commit, which /notify/cita would cost as well.
      { name: 'TPS ratio capture / no capture (median of rounds)', unit: '', value: median(ratios), better: 'higher', ...(withServer ? {} : { goal: { atLeast: 0.9 } }) },
      { name: 'TPS ratio, lowest round', unit: '', value: Math.min(...ratios), better: 'higher' },
      { name: 'failed transactions', unit: '', value: capture.failed + none.failed, better: 'lower' }
    ]
    if (withServer) {
      const [qc, qn] = await Promise.all(sides.map(async (s, i) => (await (s.server as Server).gauges()).queries - (q0[i] as number)))
      metrics.push(
        { name: 'stats messages to the subscribers, capture side', unit: '', value: capture.tracker.deliveries },
        { name: 'stats messages to the subscribers, no-capture side', unit: '', value: none.tracker.deliveries },
        { name: 'stats queries run, capture side', unit: '', value: qc as number },
        { name: 'stats queries run, no-capture side', unit: '', value: qn as number },
        { name: 'server CPU over the rounds, capture side', unit: 'ms', value: (capture.server as Server).cpuMs() - (cpu0[0] as number) },
        { name: 'server CPU over the rounds, no-capture side', unit: 'ms', value: (none.server as Server).cpuMs() - (cpu0[1] as number) }
      )
    }
    return metrics
  } finally {
    for (const side of sides) {
      await closeAll(side.clients)
      await side.server?.stop()
      await side.pool?.end()
    }
    for (const name of names) await dropBenchDatabase(ctx.adminUrl, name)
    rmSync(dir, { recursive: true, force: true })
  }
}

const writePathDescription = (ctx: Context, extra: string): string =>
  `pgbench, ${WRITERS} clients (-j 2, -M prepared), each transaction one INSERT into citas for a random negocio of ${WRITE_NEGOCIOS}; ` +
  `two databases migrated alike (${WRITE_CITAS.toLocaleString('en-US')} citas), one with every trigger on citas dropped; ` +
  `a ${Math.min(5, ctx.seconds)} s warm-up each, then ${WRITE_ROUNDS} rounds of ${Math.min(10, ctx.seconds)} s each in alternating order${extra}`

export const writePathScenario: StandaloneScenario = {
  name: 'write path',
  standalone: true,
  describe: (ctx) => writePathDescription(ctx, '; no server running'),
  run: async (ctx) => await writePath(ctx, false)
}

export const writePathWithServer: StandaloneScenario = {
  name: 'write path with server',
  standalone: true,
  servers: ['citas-live'],
  describe: (ctx) => writePathDescription(ctx, `; on each database a citas-live server (CHANGE_CAPTURE=on, PostgreSQL bus) with one subscriber per negocio (${WRITE_NEGOCIOS})`),
  run: async (ctx) => await writePath(ctx, true)
}

/** Capture latency: commits per second, negocios each with one subscriber. */
const CAPTURE_RATE = 200
const CAPTURE_NEGOCIOS = 100

interface StatsData { citas_hoy: number, total_citas: number, citas_completadas: number, citas_canceladas: number }

/** Each negocio's figures counted in SQL now, independently of the server's query (null zona_horaria: UTC days). */
export async function countsBySql (db: pg.Pool, negocios: string[]): Promise<Map<string, StatsData>> {
  const { rows } = await db.query<StatsData & { negocio_id: string }>(`
    SELECT negocio_id,
           count(*) FILTER (WHERE fecha_hora >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                              AND fecha_hora < (date_trunc('day', now() AT TIME ZONE 'UTC') + interval '1 day') AT TIME ZONE 'UTC')::int AS citas_hoy,
           count(*)::int AS total_citas,
           count(*) FILTER (WHERE estado = 'atendida')::int AS citas_completadas,
           count(*) FILTER (WHERE estado = 'cancelada')::int AS citas_canceladas
    FROM citas WHERE negocio_id = ANY($1) GROUP BY negocio_id`, [negocios])
  return new Map(rows.map((r) => [r.negocio_id, r]))
}

export const captureLatency: ServerScenario = {
  name: 'capture latency',
  servers: ['citas-live'],
  changeCapture: true,
  describe: (ctx) => `${CAPTURE_NEGOCIOS} negocios with one subscriber each; ${CAPTURE_RATE} INSERT commits/s in SQL (no /notify/cita) for ${ctx.seconds} s, round-robin over them (one writer per negocio, so each negocio's commits are in order); latency from the commit's reply to the first stats message that reflects it`,
  async run (server, ctx) {
    const channels = await Promise.all(Array.from({ length: CAPTURE_NEGOCIOS }, async (_, i) => await channelOf(ctx.db, negocioId(i))))
    const tracker = new Tracker()
    const conn = await connectAll({ port: server.port, tokens: tokens(ctx, CAPTURE_NEGOCIOS, channels), channels, concurrency: 100, timeoutMs: 30_000, tracker })
    const lastStats = new Map<Client, StatsData>()
    for (const c of conn.clients) {
      c.ws.on('message', (data: Buffer) => {
        const msg = JSON.parse(data.toString()) as { type: string, data: StatsData }
        if (msg.type === 'stats') lastStats.set(c, msg.data)
      })
    }
    // Whatever the capture had queued from earlier scenarios' writes is handled before measuring.
    await sleep(1000)
    await settled(server)
    tracker.reset()
    const q0 = (await server.gauges()).queries
    const cpu0 = server.cpuMs()

    const total = CAPTURE_RATE * ctx.seconds
    const chains = new Map<Channel, Promise<void>>()
    let failures = 0
    let inflight = 0
    let k = 0
    const t0 = now()
    let lastCommitAt = t0
    // One chain per negocio: its commits resolve in the order they were made, so the one that
    // made total_citas = base + i + 1 is changedAt[i], stamped when its promise resolves.
    const launch = (ch: Channel): void => {
      inflight++
      const next = (chains.get(ch) ?? Promise.resolve()).then(async () => {
        await change(ctx.db, ch.negocio)
        lastCommitAt = now()
        ch.changedAt.push(lastCommitAt)
      }).catch(() => { failures++ }).finally(() => { inflight-- })
      chains.set(ch, next)
    }
    while (k < total && now() - t0 < ctx.seconds * 1000 + 10_000) {
      const due = Math.min(total, Math.floor((now() - t0) / 1000 * CAPTURE_RATE) + 1)
      // eslint-disable-next-line no-unmodified-loop-condition -- inflight changes in the callbacks of launch()
      while (k < due && inflight < 2000) launch(channels[k++ % channels.length] as Channel)
      await sleep(1)
    }
    await until(() => inflight === 0, 30_000)
    const commits = channels.reduce((a, c) => a + c.changedAt.length, 0)
    const writeSeconds = (lastCommitAt - t0) / 1000
    const held = await until(() => allHold(conn.clients), 30_000)
    // Anything late (a second recompute of a coalesced burst) lands before the final check.
    await sleep(500)
    const cpu = server.cpuMs() - cpu0
    const queries = (await server.gauges()).queries - q0
    const counted = await countsBySql(ctx.db, channels.map((c) => c.negocio))
    const mismatches = conn.clients.filter((c) => {
      const got = lastStats.get(c)
      const want = counted.get(c.channel.negocio)
      return got === undefined || want === undefined ||
        got.total_citas !== want.total_citas || got.citas_hoy !== want.citas_hoy ||
        got.citas_completadas !== want.citas_completadas || got.citas_canceladas !== want.citas_canceladas
    }).length
    await closeAll(conn.clients)
    const expected = conn.clients.reduce((a, c) => a + c.channel.changedAt.length, 0)
    // A change whose message beat its commit reply to the load generator (the server heard of the
    // commit before our pg client handled the reply) counts as 0 ms.
    const latencies = [...tracker.latencies, ...new Array<number>(tracker.early).fill(0)]
    const [p50, p90, p99, max] = latencyMetrics(latencies, 'commit to subscriber') as [Metric, Metric, Metric, Metric]
    return [
      { name: 'commits', unit: '', value: commits },
      { name: 'commits/s achieved', unit: '/s', value: commits / writeSeconds, better: 'higher' },
      { name: 'failed commits', unit: '', value: failures, better: 'lower' },
      { ...p50, goal: { atMost: 100 } },
      p90,
      { ...p99, goal: { atMost: 500 } },
      max,
      { name: 'changes delivered before their commit reply (counted as 0 ms)', unit: '', value: tracker.early },
      { name: 'messages lost', unit: '', value: expected - tracker.latencies.length - tracker.early, better: 'lower' },
      { name: 'every subscriber caught up', unit: '', value: held ? 1 : 0, better: 'higher' },
      { name: 'final figures not equal to a SQL count (subscribers)', unit: '', value: mismatches, better: 'lower', goal: { atMost: 0 } },
      { name: 'stats queries run', unit: '', value: queries },
      { name: 'server CPU per commit', unit: 'µs', value: cpu * 1000 / commits, better: 'lower' }
    ]
  }
}

export const captureScenarios = [writePathScenario, writePathWithServer, captureLatency]
