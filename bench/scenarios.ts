import autocannon from 'autocannon'
import type pg from 'pg'
import { closeAll, connectAll, connectWith, notify, openSse, Tracker, type Channel, type Subscriber } from './clients.js'
import { negocioId } from './db.js'
import { now, percentiles, sleep, until, type Server, type ServerKind } from './lib.js'

export interface Metric {
  name: string
  unit: string
  value: number
  /** Which way is better, for the ratio column; absent: informative only. */
  better?: 'lower' | 'higher'
  /** A requirement on the value (citas-live's, in a table of several servers): the table says whether it is met. */
  goal?: { atMost: number } | { atLeast: number }
}

export interface Context {
  scale: number
  /** Longest steady phase of a scenario, in seconds. */
  seconds: number
  /** Notifies per second offered in the many-channels scenario. */
  rate: number
  /** BENCH_ROUNDS: measured rounds of every round-based scenario, instead of each one's default. */
  rounds?: number
  /** A pool on the bench database for the load's own writes. */
  db: pg.Pool
  userToken: (sub: string, negocios: string[]) => string
  serviceToken: string
  /** The JWT secret the servers under test share (for servers a scenario starts itself). */
  secret: string
  heapSnapshotDir?: string
  /** Adds a line to the report (a scenario's per-round figures, printed above its table). */
  print: (line?: string) => void
  /** Admin URL of the PostgreSQL under test, and the bench database's name (a prefix for scratch databases). */
  adminUrl: string
  dbName: string
  /** Starts a server under test, as run.ts does for each scenario, on any database. */
  startServer: (kind: ServerKind, opts: { databaseUrl: string, changeCapture?: boolean }) => Promise<Server>
}

interface ScenarioBase {
  name: string
  describe: (ctx: Context) => string
  /** The servers it means something for; it runs on those of BENCH_SERVERS only. Unset: all. */
  servers?: ServerKind[]
}

/** Runs once per server kind, each time against a fresh server on the bench database. */
export interface ServerScenario extends ScenarioBase {
  standalone?: false
  run: (server: Server, ctx: Context) => Promise<Metric[]>
  /**
   * Measured rounds. Unset: one run per server, one server after the other. Set: every server
   * runs at once (each idle while the other is measured), one unmeasured warm-up round each,
   * then this many rounds in alternating order (A B, B A, ...); each metric is the median over
   * the rounds. For short scenarios whose figure would otherwise follow the machine's load.
   */
  rounds?: number
  /**
   * With rounds: every measurement on a server started for it (and stopped after), instead of both
   * servers up for all rounds. For figures that depend on what the process held before, such as
   * RSS growth: a heap grown by an earlier round gives the next one room without new pages.
   */
  freshServers?: boolean
  /** citas-live runs with change capture on and its default bus (see ServerOptions.changeCapture). */
  changeCapture?: boolean
}

/** Runs once, not per server kind: it sets up what it measures itself (databases, servers) and reports one column. */
export interface StandaloneScenario extends ScenarioBase {
  standalone: true
  run: (ctx: Context) => Promise<Metric[]>
}

export type Scenario = ServerScenario | StandaloneScenario

/** How many measured rounds a round-based scenario runs: BENCH_ROUNDS, else its own default. */
export const roundCount = (scenario: ServerScenario, ctx: Context): number => ctx.rounds ?? scenario.rounds ?? 1

const roundsOf = (scenario: ServerScenario, ctx: Context): string =>
  `median of ${roundCount(scenario, ctx)} rounds in alternating order, ${scenario.freshServers === true ? 'each on servers started for it' : 'after a warm-up round'}`

export const scaled = (ctx: Context, n: number): number => Math.max(1, Math.round(n * ctx.scale))

export async function channelOf (db: pg.Pool, negocio: string): Promise<Channel> {
  const { rows } = await db.query('SELECT count(*)::int AS n FROM citas WHERE negocio_id = $1', [negocio])
  return { negocio, base: (rows[0] as { n: number }).n, changedAt: [] }
}

/** One change to a negocio's citas: total_citas goes up by one. */
export async function change (db: pg.Pool | pg.PoolClient, negocio: string): Promise<void> {
  await db.query("INSERT INTO citas (negocio_id, fecha_hora, estado) VALUES ($1, now(), 'pendiente')", [negocio])
}

export function tokens (ctx: Context, n: number, channels: Channel[]): string[] {
  return Array.from({ length: n }, (_, i) => ctx.userToken(`u${i}`, [(channels[i % channels.length] as Channel).negocio]))
}

/**
 * The server's RSS in KiB after a forced GC and a moment for freed pages to go back to the system.
 * Only outside measured phases: a forced GC shrinks the heap, which then has to regrow.
 */
async function settledRss (server: Server): Promise<number> {
  await server.gc()
  await sleep(500)
  return server.rssKiB()
}

/** Waits until the server reports no open connections, so one round's closes do not cost the next. */
async function drained (server: Server, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs
  while (Date.now() < end) {
    if ((await server.gauges()).connections === 0) return
    await sleep(50)
  }
  throw new Error('server still holds connections after the clients left')
}

export const allHold = (clients: Subscriber[]): boolean => clients.every((c) => c.last >= c.channel.base + c.channel.changedAt.length)

export function latencyMetrics (latencies: number[], prefix = 'latency'): Metric[] {
  const p = percentiles(latencies)
  return [
    { name: `${prefix} p50`, unit: 'ms', value: p.p50, better: 'lower' },
    { name: `${prefix} p90`, unit: 'ms', value: p.p90, better: 'lower' },
    { name: `${prefix} p99`, unit: 'ms', value: p.p99, better: 'lower' },
    { name: `${prefix} max`, unit: 'ms', value: p.max, better: 'lower' }
  ]
}

/**
 * One fan-out run: `n` subscribers of one channel over WebSocket or SSE, then up to 200 notifies
 * back to back, each preceded by an INSERT. `held` adds the RSS per connection before the
 * notifies (GC'd, outside the measured phase).
 */
async function fanoutRun (server: Server, ctx: Context, transport: 'websocket' | 'sse', held = false): Promise<Metric[]> {
  const n = scaled(ctx, 5000)
  const ch = await channelOf(ctx.db, negocioId(0))
  const tracker = new Tracker()
  const rss0 = await settledRss(server)
  const opts = { port: server.port, tokens: tokens(ctx, n, [ch]), channels: [ch], concurrency: 200, timeoutMs: 60_000, tracker }
  const conn = transport === 'sse' ? await connectWith(opts, openSse) : await connectAll(opts)
  const rssHeld = held ? await settledRss(server) : Number.NaN
  await sleep(500)
  tracker.reset()
  const cpu0 = server.cpuMs()
  const t0 = now()
  let failures = 0
  for (let i = 0; i < 200 && now() - t0 < ctx.seconds * 1000; i++) {
    ch.changedAt.push(now())
    await change(ctx.db, ch.negocio)
    if (await notify(server.port, ctx.serviceToken, ch.negocio) !== 200) failures++
  }
  await until(() => allHold(conn.clients), 30_000)
  const elapsed = (tracker.lastAt - t0) / 1000
  const cpu = server.cpuMs() - cpu0
  const expected = conn.clients.length * ch.changedAt.length
  const rss1 = await settledRss(server)
  await closeAll(conn.clients)
  await drained(server)
  return [
    { name: 'connect + subscribe, all', unit: 'ms', value: conn.ms, better: 'lower' },
    { name: 'notifies', unit: '', value: ch.changedAt.length },
    { name: 'deliveries', unit: '', value: tracker.deliveries },
    { name: 'deliveries/s', unit: '/s', value: tracker.deliveries / elapsed, better: 'higher' },
    ...latencyMetrics(tracker.latencies),
    { name: 'messages lost', unit: '', value: expected - tracker.latencies.length, better: 'lower' },
    { name: 'failed notifies/connects', unit: '', value: failures + conn.failed, better: 'lower' },
    { name: 'server CPU per delivery', unit: 'µs', value: cpu * 1000 / tracker.deliveries, better: 'lower' },
    ...(held ? [{ name: 'server RSS per connection, held', unit: 'KiB', value: (rssHeld - rss0) / n, better: 'lower' as const }] : []),
    { name: 'server RSS per connection, after the run', unit: 'KiB', value: (rss1 - rss0) / n, better: 'lower' }
  ]
}

export const fanout: ServerScenario = {
  name: 'fan-out',
  describe: (ctx) => `${scaled(ctx, 5000)} subscribers on one channel; up to 200 notifies back to back (each after the previous reply), each preceded by an INSERT; ${roundsOf(fanout, ctx)}`,
  rounds: 4,
  run: async (server, ctx) => await fanoutRun(server, ctx, 'websocket')
}

/** SSE fan-out runs so far: even ones measure WebSocket first, odd ones SSE first. */
let sseRuns = 0

export const sseFanout: ServerScenario = {
  name: 'SSE fan-out',
  describe: (ctx) => `citas-live only: fan-out as above, ${scaled(ctx, 5000)} subscribers of one channel over Server-Sent Events (GET /sse, \`Authorization: Bearer\`) and, on the same server in the same round, over WebSocket, in alternating order; ratios SSE / WebSocket; ${roundsOf(sseFanout, ctx)}`,
  servers: ['citas-live'],
  rounds: 4,
  async run (server, ctx) {
    const order: Array<'websocket' | 'sse'> = sseRuns++ % 2 === 0 ? ['websocket', 'sse'] : ['sse', 'websocket']
    const results = new Map<string, Metric[]>()
    for (const transport of order) results.set(transport, await fanoutRun(server, ctx, transport, true))
    const ws = results.get('websocket') as Metric[]
    const sse = results.get('sse') as Metric[]
    const pick = (ms: Metric[], name: string): number => ms.find((m) => m.name === name)?.value ?? Number.NaN
    const rows: Array<[string, string, 'lower' | 'higher']> = [
      ['server CPU per delivery', 'µs', 'lower'],
      ['server RSS per connection, held', 'KiB', 'lower'],
      ['server RSS per connection, after the run', 'KiB', 'lower'],
      ['deliveries/s', '/s', 'higher'],
      ['latency p50', 'ms', 'lower'],
      ['latency p99', 'ms', 'lower'],
      ['connect + subscribe, all', 'ms', 'lower']
    ]
    return [
      ...rows.flatMap(([name, unit, better]): Metric[] => [
        { name: `WebSocket: ${name}`, unit, value: pick(ws, name), better },
        { name: `SSE: ${name}`, unit, value: pick(sse, name), better },
        { name: `ratio SSE / WebSocket: ${name}`, unit: '', value: pick(sse, name) / pick(ws, name), better }
      ]),
      { name: 'messages lost, both', unit: '', value: pick(ws, 'messages lost') + pick(sse, 'messages lost'), better: 'lower' },
      { name: 'failed notifies/connects, both', unit: '', value: pick(ws, 'failed notifies/connects') + pick(sse, 'failed notifies/connects'), better: 'lower' }
    ]
  }
}

export const idle: ServerScenario = {
  name: 'idle',
  describe: (ctx) => `${scaled(ctx, 19_900)} subscribed connections over 100 channels, held; RSS per connection after GC, from the start and over the second half of the connections; ${roundsOf(idle, ctx)}`,
  rounds: 4,
  freshServers: true,
  async run (server, ctx) {
    const n = scaled(ctx, 19_900)
    const channels = await Promise.all(Array.from({ length: 100 }, async (_, i) => await channelOf(ctx.db, negocioId(i))))
    const tracker = new Tracker()
    // Warm up code paths and pools, so the difference below is the connections' own memory.
    const warm = await connectAll({ port: server.port, tokens: tokens(ctx, 200, channels), channels, concurrency: 200, timeoutMs: 30_000, tracker })
    await closeAll(warm.clients)
    await until(() => false, 1000)
    const rss0 = await settledRss(server)
    // Two halves, RSS taken after each: the second half's growth is the marginal cost of a
    // connection, free of whatever room the process's starting heap had (a larger heap at the
    // start absorbs the first connections without new pages).
    const all = tokens(ctx, n, channels)
    const half = Math.floor(n / 2 / channels.length) * channels.length
    const connect = async (from: number, to: number) => {
      const cpu0 = server.cpuMs()
      const conn = await connectAll({ port: server.port, tokens: all.slice(from, to), channels, concurrency: 500, timeoutMs: 120_000, tracker })
      const cpu = server.cpuMs() - cpu0
      await sleep(2000)
      const rss = await settledRss(server)
      return { ...conn, cpu, rss, held: (await server.gauges()).connections }
    }
    const first = await connect(0, half)
    const second = await connect(half, n)
    const held = second.held
    if (ctx.heapSnapshotDir !== undefined) await server.heapSnapshot(`${ctx.heapSnapshotDir}/idle-${server.kind}-${Date.now()}.heapsnapshot`)
    await closeAll([...first.clients, ...second.clients], 60_000)
    return [
      { name: 'connections held', unit: '', value: held, better: 'higher' },
      { name: 'connect + subscribe, all', unit: 'ms', value: first.ms + second.ms, better: 'lower' },
      { name: 'failed connects', unit: '', value: first.failed + second.failed, better: 'lower' },
      { name: 'server RSS before', unit: 'MiB', value: rss0 / 1024 },
      { name: 'server RSS held', unit: 'MiB', value: second.rss / 1024 },
      { name: 'server RSS per connection', unit: 'KiB', value: (second.rss - rss0) / held, better: 'lower' },
      { name: 'server RSS per connection, second half', unit: 'KiB', value: (second.rss - first.rss) / (held - first.held), better: 'lower' },
      { name: 'server CPU per connect', unit: 'µs', value: (first.cpu + second.cpu) * 1000 / n, better: 'lower' }
    ]
  }
}

export const connectRate: ServerScenario = {
  name: 'connect rate',
  describe: (ctx) => `${scaled(ctx, 5000)} authenticated connects + subscribes over 100 channels, 200 in flight; ${roundsOf(connectRate, ctx)}`,
  rounds: 6,
  async run (server, ctx) {
    const n = scaled(ctx, 5000)
    const channels = await Promise.all(Array.from({ length: 100 }, async (_, i) => await channelOf(ctx.db, negocioId(i))))
    const tracker = new Tracker()
    const toks = tokens(ctx, n, channels)
    const cpu0 = server.cpuSplitMs()
    const conn = await connectAll({ port: server.port, tokens: toks, channels, concurrency: 200, timeoutMs: 60_000, tracker })
    const cpu1 = server.cpuSplitMs()
    const cpu = cpu1.user + cpu1.system - cpu0.user - cpu0.system
    await closeAll(conn.clients)
    await drained(server)
    return [
      { name: 'connect + subscribe, all', unit: 'ms', value: conn.ms, better: 'lower' },
      { name: 'connects/s', unit: '/s', value: (n - conn.failed) / (conn.ms / 1000), better: 'higher' },
      ...latencyMetrics(conn.clients.filter((c) => c.readyAt > 0).map((c) => c.readyAt - c.startedAt), 'connect-to-stats'),
      { name: 'failed connects', unit: '', value: conn.failed, better: 'lower' },
      { name: 'server CPU per connect', unit: 'µs', value: cpu * 1000 / n, better: 'lower' },
      // The kernel's share (TCP accept, reads, writes, closes, page faults): the part a server's code moves least.
      { name: 'server CPU per connect, in the kernel', unit: 'µs', value: (cpu1.system - cpu0.system) * 1000 / n, better: 'lower' }
    ]
  }
}

export const notifyThroughput: ServerScenario = {
  name: 'notify throughput',
  describe: (ctx) => `autocannon, 100 connections for ${Math.min(20, ctx.seconds)} s, POST /notify/cita round-robin over 100 negocios, one subscriber each`,
  async run (server, ctx) {
    const channels = await Promise.all(Array.from({ length: 100 }, async (_, i) => await channelOf(ctx.db, negocioId(i))))
    const tracker = new Tracker()
    const conn = await connectAll({ port: server.port, tokens: tokens(ctx, 100, channels), channels, concurrency: 100, timeoutMs: 30_000, tracker })
    const q0 = (await server.gauges()).queries
    const cpu0 = server.cpuMs()
    let k = 0
    const result = await autocannon({
      url: `http://127.0.0.1:${server.port}`,
      connections: 100,
      duration: Math.min(20, ctx.seconds),
      requests: [{
        method: 'POST',
        path: '/notify/cita',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${ctx.serviceToken}` },
        setupRequest: (req) => ({ ...req, body: `{"negocio_id":"${negocioId(k++ % 100)}","action":"updated"}` })
      }]
    })
    const cpu = server.cpuMs() - cpu0
    const queries = (await server.gauges()).queries - q0
    await closeAll(conn.clients)
    const ok = result['2xx']
    return [
      { name: 'requests/s', unit: '/s', value: result.requests.average, better: 'higher' },
      { name: 'latency p50', unit: 'ms', value: result.latency.p50, better: 'lower' },
      { name: 'latency p99', unit: 'ms', value: result.latency.p99, better: 'lower' },
      { name: 'non-2xx + errors', unit: '', value: result.non2xx + result.errors, better: 'lower' },
      { name: 'stats queries per notify', unit: '', value: queries / ok, better: 'lower' },
      { name: 'deliveries', unit: '', value: tracker.deliveries },
      { name: 'server CPU per notify', unit: 'µs', value: cpu * 1000 / ok, better: 'lower' }
    ]
  }
}

/** Launches changes at `rate` per second for `seconds`, each an INSERT then a notify; bounded in flight. */
async function paced (server: Server, ctx: Context, channels: Channel[], rate: number, total: number, seconds: number, db: pg.Pool | pg.PoolClient, awaitInsert: boolean): Promise<{ failures: number, lastAt: number, firstAt: number }> {
  let failures = 0
  let inflight = 0
  let k = 0
  const firstAt = now()
  let lastAt = firstAt
  let chain = Promise.resolve()
  const launch = (ch: Channel): void => {
    inflight++
    const one = async (): Promise<void> => {
      ch.changedAt.push(now())
      await change(db, ch.negocio)
      lastAt = now()
    }
    const post = (): void => {
      notify(server.port, ctx.serviceToken, ch.negocio).then((status) => {
        if (status !== 200) failures++
        inflight--
      }, () => {})
    }
    if (awaitInsert) {
      // One writer in order: change i is exactly total base + i + 1.
      chain = chain.then(one).then(post)
    } else {
      one().then(post, () => { failures++; inflight-- })
    }
  }
  while (k < total && now() - firstAt < seconds * 1000 + 10_000) {
    const due = Math.min(total, Math.floor((now() - firstAt) / 1000 * rate) + 1)
    // eslint-disable-next-line no-unmodified-loop-condition -- inflight changes in the callbacks of launch()
    while (k < due && inflight < 2000) launch(channels[k++ % channels.length] as Channel)
    await sleep(1)
  }
  await chain
  await until(() => inflight === 0, 30_000)
  return { failures, lastAt, firstAt }
}

export const manyChannels: ServerScenario = {
  name: 'many channels',
  describe: (ctx) => `${scaled(ctx, 5000)} subscribers over 500 channels; ${ctx.rate} notifies/s offered for ${Math.min(20, ctx.seconds)} s (each an INSERT then a notify)`,
  async run (server, ctx) {
    const n = scaled(ctx, 5000)
    const channels = await Promise.all(Array.from({ length: 500 }, async (_, i) => await channelOf(ctx.db, negocioId(i))))
    const tracker = new Tracker()
    const rss0 = await settledRss(server)
    const conn = await connectAll({ port: server.port, tokens: tokens(ctx, n, channels), channels, concurrency: 200, timeoutMs: 60_000, tracker })
    await sleep(500)
    tracker.reset()
    const seconds = Math.min(20, ctx.seconds)
    const cpu0 = server.cpuMs()
    const run = await paced(server, ctx, channels, ctx.rate, ctx.rate * seconds, seconds, ctx.db, false)
    await until(() => allHold(conn.clients), 30_000)
    const cpu = server.cpuMs() - cpu0
    const sent = channels.reduce((a, c) => a + c.changedAt.length, 0)
    const expected = conn.clients.reduce((a, c) => a + c.channel.changedAt.length, 0)
    const rss1 = await settledRss(server)
    await closeAll(conn.clients)
    return [
      { name: 'connect + subscribe, all', unit: 'ms', value: conn.ms, better: 'lower' },
      { name: 'notifies/s achieved', unit: '/s', value: sent / ((run.lastAt - run.firstAt) / 1000), better: 'higher' },
      { name: 'deliveries', unit: '', value: tracker.deliveries },
      ...latencyMetrics(tracker.latencies),
      { name: 'messages lost', unit: '', value: expected - tracker.latencies.length, better: 'lower' },
      { name: 'failed notifies/connects', unit: '', value: run.failures + conn.failed, better: 'lower' },
      { name: 'server CPU per notify', unit: 'µs', value: cpu * 1000 / sent, better: 'lower' },
      { name: 'server RSS per connection, after the run', unit: 'KiB', value: (rss1 - rss0) / n, better: 'lower' }
    ]
  }
}

export const burst: ServerScenario = {
  name: 'burst',
  describe: (ctx) => `${scaled(ctx, 1000)} subscribers of one negocio; 1,000 changes in 1 s, each an INSERT (one writer, in order) then a notify not awaited`,
  async run (server, ctx) {
    const n = scaled(ctx, 1000)
    const ch = await channelOf(ctx.db, negocioId(900))
    const tracker = new Tracker()
    const conn = await connectAll({ port: server.port, tokens: tokens(ctx, n, [ch]), channels: [ch], concurrency: 200, timeoutMs: 60_000, tracker })
    await sleep(500)
    tracker.reset()
    const q0 = (await server.gauges()).queries
    const cpu0 = server.cpuMs()
    const writer = await ctx.db.connect()
    let run
    try {
      run = await paced(server, ctx, [ch], 1000, 1000, 1, writer, true)
    } finally {
      writer.release()
    }
    const held = await until(() => allHold(conn.clients), 60_000, 2)
    const finalAt = now()
    const cpu = server.cpuMs() - cpu0
    const queries = (await server.gauges()).queries - q0
    await closeAll(conn.clients)
    return [
      { name: 'changes', unit: '', value: ch.changedAt.length },
      { name: 'burst duration (writes)', unit: 'ms', value: run.lastAt - run.firstAt },
      { name: 'stats queries run', unit: '', value: queries, better: 'lower' },
      { name: 'every subscriber holds final state', unit: '', value: held ? 1 : 0, better: 'higher' },
      { name: 'final state, after last change', unit: 'ms', value: finalAt - run.lastAt, better: 'lower' },
      { name: 'final state, after first change', unit: 'ms', value: finalAt - run.firstAt, better: 'lower' },
      ...latencyMetrics(tracker.latencies).filter((m) => !m.name.endsWith('p90')),
      { name: 'deliveries', unit: '', value: tracker.deliveries },
      { name: 'failed notifies/connects', unit: '', value: run.failures + conn.failed, better: 'lower' },
      { name: 'server CPU, whole burst', unit: 'ms', value: cpu, better: 'lower' }
    ]
  }
}

export const reconnectStorm: ServerScenario = {
  name: 'reconnect storm',
  describe: (ctx) => `${scaled(ctx, 5000)} subscribers over 50 negocios all drop, then all reconnect and resubscribe at once (cold cache, as after a deploy)`,
  async run (server, ctx) {
    const n = scaled(ctx, 5000)
    const channels = await Promise.all(Array.from({ length: 50 }, async (_, i) => await channelOf(ctx.db, negocioId(950 + i))))
    const toks = tokens(ctx, n, channels)
    const first = await connectAll({ port: server.port, tokens: toks, channels, concurrency: 200, timeoutMs: 60_000, tracker: new Tracker() })
    await closeAll(first.clients)
    await drained(server)
    await sleep(200)
    const q0 = (await server.gauges()).queries
    const cpu0 = server.cpuMs()
    const tracker = new Tracker()
    const storm = await connectAll({ port: server.port, tokens: toks, channels, concurrency: Number.POSITIVE_INFINITY, timeoutMs: 60_000, tracker })
    const cpu = server.cpuMs() - cpu0
    const queries = (await server.gauges()).queries - q0
    const wrong = storm.clients.filter((c) => c.last !== c.channel.base).length
    await closeAll(storm.clients)
    return [
      { name: 'stats queries run', unit: '', value: queries, better: 'lower' },
      { name: 'every subscriber holds final state', unit: 'ms', value: storm.ms, better: 'lower' },
      ...latencyMetrics(storm.clients.filter((c) => c.readyAt > 0).map((c) => c.readyAt - c.startedAt), 'connect-to-stats'),
      { name: 'clients without the current stats', unit: '', value: wrong + storm.failed, better: 'lower' },
      { name: 'server CPU, whole storm', unit: 'ms', value: cpu, better: 'lower' }
    ]
  }
}

export const scenarios: Scenario[] = [fanout, sseFanout, idle, connectRate, notifyThroughput, manyChannels, burst, reconnectStorm]
