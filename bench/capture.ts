/**
 * Change capture: what the trigger the migrations put on `citas` costs the applications that write
 * it (write path). It measures whatever db/migrations defines at the time it runs.
 */
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import pg from 'pg'
import { closeAll, connectAll, Tracker, type Client } from './clients.js'
import { citasTriggers, createBenchDatabase, dropBenchDatabase, dropCitasTriggers, negocioId } from './db.js'
import { sleep, type Server } from './lib.js'
import { channelOf, tokens, type Context, type Metric, type StandaloneScenario } from './scenarios.js'

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

export const captureScenarios = [writePathScenario, writePathWithServer]
