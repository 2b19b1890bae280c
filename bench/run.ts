/**
 * npm run bench: every scenario against the bare-ws baseline and citas-live, one after the
 * other in this invocation, each server in a process of its own. Prints markdown tables and
 * writes them to BENCH_OUT (default bench/last-run.md).
 */
import { createSigner } from 'fast-jwt'
import pg from 'pg'
import { randomBytes } from 'node:crypto'
import { mkdirSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import { createBenchDatabase, dropBenchDatabase, statsQueryReport } from './db.js'
import { CPU, Server, type ServerKind } from './lib.js'
import { captureScenarios } from './capture.js'
import { captureTrustScenarios } from './capture-trust.js'
import { scaleOutScenarios } from './scale-out.js'
import { roundCount, scenarios, type Context, type Metric, type Scenario, type ServerScenario } from './scenarios.js'

const env = process.env
const scale = Number(env.BENCH_SCALE ?? '1')
const seconds = Number(env.BENCH_SECONDS ?? '20')
const rate = Number(env.BENCH_RATE ?? '500')
const rounds = env.BENCH_ROUNDS === undefined || env.BENCH_ROUNDS === '' ? undefined : Number(env.BENCH_ROUNDS)
const citas = Number(env.BENCH_CITAS ?? String(Math.round(1_000_000 * Math.min(1, scale))))
const adminUrl = env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
const dbName = env.BENCH_DATABASE ?? 'citas_bench'
const only = env.BENCH_ONLY?.split(',').map((s) => s.trim()).filter((s) => s !== '')
const kinds = (env.BENCH_SERVERS ?? 'baseline,citas-live').split(',') as ServerKind[]
const out = env.BENCH_OUT ?? 'bench/last-run.md'
const cpuProfDir = env.BENCH_CPU_PROF
const heapSnapshotDir = env.BENCH_HEAP_SNAPSHOT
const perfDir = env.BENCH_PERF
if (!(scale > 0) || !(seconds > 0) || !(rate > 0) || !(citas >= 0)) throw new Error('BENCH_SCALE, BENCH_SECONDS and BENCH_RATE must be > 0, BENCH_CITAS >= 0')
if (rounds !== undefined && !(Number.isInteger(rounds) && rounds >= 1)) throw new Error('BENCH_ROUNDS must be a whole number >= 1')

const lines: string[] = []
const print = (line = ''): void => {
  lines.push(line)
  process.stdout.write(line + '\n')
}

function fmt (v: number): string {
  if (!Number.isFinite(v)) return 'n/a'
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString('en-US')
  if (Math.abs(v) >= 10) return v.toFixed(1)
  return v.toFixed(2)
}

/** Whether a metric meets its goal, for the table's goal column. */
function goal (m: Metric, value: number): string {
  if (m.goal === undefined) return ''
  const [sign, bound, met] = 'atMost' in m.goal
    ? ['≤', m.goal.atMost, value <= m.goal.atMost]
    : ['≥', m.goal.atLeast, value >= m.goal.atLeast]
  return `${sign} ${bound.toLocaleString('en-US')}${m.unit === '' ? '' : ` ${m.unit}`}: ${met ? 'met' : '**not met**'}`
}

/** Ratio columns: citas-live against the baseline, and against itself on the adapters' public paths. */
const RATIOS: Array<[string, string]> = [['citas-live', 'baseline'], ['citas-live', 'citas-live-public']]

/** One column per key of `results` (server kinds, or `value` for a standalone scenario). */
function table (results: Map<string, Metric[]>, cols: string[]): void {
  const ratios = RATIOS.filter(([a, b]) => results.has(a) && results.has(b))
  const mine = results.get('citas-live')
  const first = results.get(cols[0] as string) ?? []
  // Goals apply to citas-live's figures (or the only column).
  const judged = mine ?? first
  const goals = judged.some((m) => m.goal !== undefined)
  print(`| metric | ${cols.join(' | ')} |${ratios.map(([a, b]) => ` ratio ${a} / ${b} |`).join('')}${goals ? ' goal |' : ''}`)
  print(`| --- | ${cols.map(() => '---:').join(' | ')} |${ratios.map(() => ' ---: |').join('')}${goals ? ' --- |' : ''}`)
  first.forEach((m, i) => {
    const values = cols.map((k) => results.get(k)?.[i]?.value ?? Number.NaN)
    const unit = m.unit === '' ? '' : ` (${m.unit})`
    const r = ratios.map(([num, den]) => {
      const a = results.get(den)?.[i]?.value ?? Number.NaN
      const b = results.get(num)?.[i]?.value ?? Number.NaN
      return m.better === undefined || a === 0 || !Number.isFinite(a / b) ? ' |' : ` ${(b / a).toFixed(2)}× |`
    }).join('')
    const g = goals ? ` ${goal(judged[i] ?? m, judged[i]?.value ?? Number.NaN)} |` : ''
    print(`| ${m.name}${unit} | ${values.map(fmt).join(' | ')} |${r}${g}`)
  })
}

function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid] as number : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2
}

/** Median of each metric over rounds (all rounds report the same metrics in the same order). */
function medians (rounds: Metric[][]): Metric[] {
  return (rounds[0] ?? []).map((m, i) => ({ ...m, value: median(rounds.map((r) => r[i]?.value ?? Number.NaN)) }))
}

/**
 * Every server up at once; a warm-up round each (not counted), then `rounds` rounds in
 * alternating order, so a drift in the machine's load falls on both sides alike. The orders are
 * B A (warm-up), A B, B A, ...: the server that opens a round was also the last one measured, so
 * with an even number of rounds each server opens as many rounds as the other (a server measured
 * twice in a row starts from a heap already grown, which lowers its RSS per connection).
 */
async function runRounds (scenario: ServerScenario, ctx: Context, kinds: ServerKind[], rounds: number, start: (kind: ServerKind) => Promise<Server>, results: Map<string, Metric[]>): Promise<void> {
  const servers = new Map<ServerKind, Server>()
  const measured = new Map<ServerKind, Metric[][]>(kinds.map((k) => [k, []]))
  const fresh = scenario.freshServers === true
  try {
    if (!fresh) for (const kind of kinds) servers.set(kind, await start(kind))
    // A fresh server per measurement needs no warm-up round: nothing carries over.
    for (let round = fresh ? 0 : -1; round < rounds; round++) {
      const order = round % 2 === 0 ? kinds : [...kinds].reverse()
      for (const kind of order) {
        if (fresh) servers.set(kind, await start(kind))
        const server = servers.get(kind) as Server
        const metrics = await scenario.run(server, ctx)
        if (fresh) {
          servers.delete(kind)
          await server.stop()
        }
        if (round >= 0) measured.get(kind)?.push(metrics)
      }
    }
    for (const kind of kinds) results.set(kind, medians(measured.get(kind) ?? []))
    // Every round's figures, so the spread behind each median is on record.
    const first = measured.get(kinds[0] as ServerKind)?.[0] ?? []
    print('Per round:')
    print()
    first.forEach((m, i) => {
      if (m.better === undefined) return
      const perRound = (k: ServerKind): string => (measured.get(k) ?? []).map((r) => fmt(r[i]?.value ?? Number.NaN)).join(', ')
      print(`- ${m.name}${m.unit === '' ? '' : ` (${m.unit})`}: ${kinds.map((k) => `${k} ${perRound(k)}`).join('; ')}`)
      // The ratio within each round (the two servers measured minutes apart at most), and its median:
      // a drift in the machine's load between rounds moves both sides of a round alike.
      for (const [num, den] of RATIOS) {
        const a = measured.get(num as ServerKind)
        const b = measured.get(den as ServerKind)
        if (a === undefined || b === undefined) continue
        const ratios = a.map((r, k) => (r[i]?.value ?? Number.NaN) / (b[k]?.[i]?.value ?? Number.NaN))
        print(`  - ratio ${num} / ${den} per round: ${ratios.map((r) => `${r.toFixed(2)}×`).join(', ')} (median ${median(ratios).toFixed(2)}×)`)
      }
    })
    print()
  } catch (err) {
    process.stderr.write(`${scenario.name} failed: ${(err as Error).stack ?? String(err)}\n`)
  } finally {
    for (const server of servers.values()) await server.stop()
  }
}

function profileName (scenario: string, kind: ServerKind, started: Map<ServerKind, number>): string {
  const n = (started.get(kind) ?? 0) + 1
  started.set(kind, n)
  return `${scenario.replace(/\W+/g, '-')}-${kind}${n === 1 ? '' : `-${n}`}.cpuprofile`
}

const secret = randomBytes(24).toString('hex')
const signer = createSigner({ key: secret, algorithm: 'HS256', expiresIn: 3_600_000 })

print(`# citas-live benchmark, ${new Date().toISOString()}`)
print()
print(`- machine: ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? 'unknown'}), ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, Node ${process.version}, load average at start ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`)
print(`- settings: BENCH_SCALE=${scale} BENCH_SECONDS=${seconds} BENCH_RATE=${rate} BENCH_CITAS=${citas}${rounds === undefined ? '' : ` BENCH_ROUNDS=${rounds}`}; servers pinned to CPU ${CPU.taskset ? (env.BENCH_SERVER_CPU ?? '0') : '(no taskset)'}, load on CPU ${CPU.taskset ? '1 (bench/run.sh)' : '(any)'}`)
print()

const url = await createBenchDatabase(adminUrl, dbName, 1000, citas)
const db = new pg.Pool({ connectionString: url, max: 20 })
// pool.end() resolves before its sockets close: the DROP DATABASE ... WITH (FORCE) at the end may
// still terminate one, and an idle client's error must not crash the run.
db.on('error', () => {})
try {
  const q = await statsQueryReport(db, 1000, 2000)
  print(`## stats query at ${citas.toLocaleString('en-US')} citas (${q.rowsPerNegocio} per negocio)`)
  print()
  print(`2,000 runs from one client over loopback: mean ${fmt(q.times.mean)} ms, p50 ${fmt(q.times.p50)} ms, p99 ${fmt(q.times.p99)} ms, max ${fmt(q.times.max)} ms.`)
  print()
  print('```')
  print(q.plan)
  print('```')
  print()

  const base = {
    scale,
    seconds,
    rate,
    ...(rounds !== undefined ? { rounds } : {}),
    db,
    userToken: (sub: string, negocios: string[]) => signer({ sub, negocios }),
    serviceToken: signer({ sub: 'bench', role: 'service' }),
    secret,
    ...(heapSnapshotDir !== undefined ? { heapSnapshotDir } : {}),
    print,
    adminUrl,
    dbName
  }
  if (heapSnapshotDir !== undefined) mkdirSync(heapSnapshotDir, { recursive: true })
  if (cpuProfDir !== undefined) mkdirSync(cpuProfDir, { recursive: true })
  if (perfDir !== undefined) mkdirSync(perfDir, { recursive: true })

  const all: Scenario[] = [...scenarios, ...captureScenarios, ...captureTrustScenarios, ...scaleOutScenarios]
  for (const scenario of all) {
    if (only !== undefined && !only.includes(scenario.name)) continue
    // Only the servers of BENCH_SERVERS it means something for (the baseline has no database side).
    const runOn = kinds.filter((k) => scenario.servers === undefined || scenario.servers.includes(k))
    if (runOn.length === 0) continue
    // A second server of the same kind in one scenario (write path with server) gets a profile name of its own.
    const started = new Map<ServerKind, number>()
    const startServer = async (kind: ServerKind, opts: { databaseUrl?: string, changeCapture?: boolean } = {}): Promise<Server> => {
      const name = profileName(scenario.name, kind, started)
      return await Server.start(kind, {
        databaseUrl: opts.databaseUrl ?? url,
        secret,
        ...(opts.changeCapture === true ? { changeCapture: true } : {}),
        ...(cpuProfDir !== undefined ? { nodeFlags: ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`, `--cpu-prof-name=${name}`] } : {}),
        ...(perfDir !== undefined ? { perfRecord: join(perfDir, name.replace(/\.cpuprofile$/, '.perf.data')) } : {})
      })
    }
    const ctx: Context = { ...base, startServer }
    print(`## ${scenario.name}`)
    print()
    print(scenario.describe(ctx))
    print()
    const results = new Map<string, Metric[]>()
    if (scenario.standalone === true) {
      try {
        results.set('value', await scenario.run(ctx))
      } catch (err) {
        process.stderr.write(`${scenario.name} failed: ${(err as Error).stack ?? String(err)}\n`)
      }
      table(results, ['value'])
      print()
      continue
    }
    const startFor = async (kind: ServerKind): Promise<Server> => await startServer(kind, scenario.changeCapture === true ? { changeCapture: true } : {})
    if (scenario.rounds === undefined) {
      for (const kind of runOn) {
        const server = await startFor(kind)
        try {
          results.set(kind, await scenario.run(server, ctx))
        } catch (err) {
          process.stderr.write(`${scenario.name} on ${kind} failed: ${(err as Error).stack ?? String(err)}\n`)
        } finally {
          await server.stop()
        }
      }
    } else {
      await runRounds(scenario, ctx, runOn, roundCount(scenario, ctx), startFor, results)
    }
    table(results, runOn)
    print()
  }
  print(`load average at end: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`)
} finally {
  await db.end()
  await dropBenchDatabase(adminUrl, dbName)
  writeFileSync(out, lines.join('\n') + '\n')
}
