/**
 * Change capture over time and under attack (SECURITY.md, "Change capture, and the other roles"):
 *
 * - write tax over time: what capture costs writers over a long run, when deleted rows of the
 *   change table are left to pile up (autovacuum off) or to a vacuum that may fall behind (on), on a
 *   PostgreSQL of the bench's own;
 * - capture under attack: an ordinary role of the booking database doing all it can to flood,
 *   stall or take over capture, while real changes keep coming.
 */
import { execFile, spawn } from 'node:child_process'
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import pg from 'pg'
import { startEmbeddedPostgres } from '../services/demo/embedded-postgres.js'
import { closeAll, connectAll, Tracker, type Channel } from './clients.js'
import { createBenchDatabase, dropCitasTriggers, negocioId, withDatabase } from './db.js'
import { now, sleep, until } from './lib.js'
import { change, channelOf, latencyMetrics, tokens, type Metric, type StandaloneScenario } from './scenarios.js'

const run = promisify(execFile)
const env = process.env

const WRITERS = 16
const NEGOCIOS = 100
const CITAS = 100_000
const INSERT_SCRIPT = `\\set n random(0, ${NEGOCIOS - 1})
INSERT INTO citas (negocio_id, fecha_hora, estado) VALUES ('n' || lpad(:n::text, 4, '0'), now(), 'pendiente');
`

/** pgbench for `minutes`, reporting every minute; the TPS of each minute and of the whole run. */
/** One round of the write load: TPS over `seconds`, from pgbench's summary. */
async function pgbenchRound (url: string, script: string, seconds: number): Promise<number> {
  const args = ['-n', '-f', script, '-c', String(WRITERS), '-j', '2', '-T', String(seconds), '-M', 'prepared', url]
  const { stdout } = await run('pgbench', args, { timeout: (seconds + 120) * 1000, maxBuffer: 16 << 20 })
  const tps = Number(/tps = ([\d.]+) \(without initial connection time\)/.exec(stdout)?.[1])
  if (!Number.isFinite(tps)) throw new Error(`pgbench printed no TPS:\n${stdout}`)
  return tps
}

/** The first row of `sql` (of its last statement, when it has several). */
async function one<T> (url: string, sql: string, values: unknown[] = []): Promise<T> {
  const c = new pg.Client({ connectionString: url })
  await c.connect()
  try {
    const result = (await c.query(sql, values)) as pg.QueryResult | pg.QueryResult[]
    return (Array.isArray(result) ? result.at(-1) : result)?.rows[0] as T
  } finally {
    await c.end()
  }
}

/**
 * Per autovacuum setting (BENCH_AUTOVACUUM: off,on), a PostgreSQL of its own with two databases
 * migrated alike, one with the capture triggers dropped; a citas-live instance drains the other
 * (no subscribers: what is measured is capture, not the recomputes a notify would cost as well).
 * BENCH_WRITE_MINUTES (10) one-minute rounds of pgbench on each, alternating ABBA (none, capture,
 * capture, none, ...): this machine's own speed moved 1.9x within ten minutes of one load, so
 * back-to-back ten-minute phases measured the machine more than the capture. The capture side's
 * table, leader and (un)vacuumed dead rows carry over from round to round, so a cost that grows
 * with time still shows in the late rounds.
 */
export const writeTaxOverTime: StandaloneScenario = {
  name: 'write tax over time',
  standalone: true,
  servers: ['citas-live'],
  describe: () => `${WRITERS} pgbench writers (-j 2, -M prepared), one INSERT into citas per transaction over ${NEGOCIOS} negocios (${CITAS.toLocaleString('en-US')} citas already in), ` +
    `${env.BENCH_WRITE_MINUTES ?? '10'} one-minute rounds without capture and as many with capture and a citas-live instance draining, alternating (ABBA), ` +
    `on a PostgreSQL of the bench's own with autovacuum ${env.BENCH_AUTOVACUUM ?? 'off,on'}; TPS per round from pgbench`,
  async run (ctx) {
    const minutes = Number(env.BENCH_WRITE_MINUTES ?? '10')
    const settings = (env.BENCH_AUTOVACUUM ?? 'off,on').split(',').map((s) => s.trim())
    const metrics: Metric[] = []
    for (const autovacuum of settings) {
      const root = mkdtempSync(path.join(os.tmpdir(), 'citas-live-bench-pg-'))
      chmodSync(root, 0o755)
      const pgServer = await startEmbeddedPostgres({ dir: path.join(root, 'pg'), port: 0, settings: { autovacuum, max_connections: '100' } })
      try {
        const admin = withDatabase(pgServer.connectionString, 'postgres')
        const script = path.join(root, 'insert.sql')
        writeFileSync(script, INSERT_SCRIPT)
        const [withCapture, without] = [await createBenchDatabase(admin, 'tax_capture', NEGOCIOS, CITAS), await createBenchDatabase(admin, 'tax_none', NEGOCIOS, CITAS)]
        await dropCitasTriggers(without)
        const server = await ctx.startServer('citas-live', { databaseUrl: withCapture, changeCapture: true })
        const none: number[] = []
        const capture: number[] = []
        let size: { bytes: string }
        try {
          for (let round = 0; round < minutes; round++) {
            const order = round % 2 === 0 ? [without, withCapture] : [withCapture, without]
            for (const url of order) (url === without ? none : capture).push(await pgbenchRound(url, script, 60))
          }
          // What the drain has not reached yet is read within a poll or two.
          await sleep(1000)
          size = await one<{ bytes: string }>(withCapture, "SELECT pg_total_relation_size('citas_live_cambios')::text AS bytes")
        } finally {
          await server.stop()
        }
        const ratios = capture.map((tps, i) => tps / (none[i] ?? Number.NaN))
        const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length
        ctx.print(`- autovacuum ${autovacuum}: TPS per round without capture ${none.map(Math.round).join(', ')}; with ${capture.map(Math.round).join(', ')}; ratios ${ratios.map((r) => r.toFixed(2)).join(', ')}`)
        metrics.push(
          { name: `autovacuum ${autovacuum}: TPS without capture, whole run`, unit: '/s', value: mean(none), better: 'higher' },
          { name: `autovacuum ${autovacuum}: TPS with capture, whole run`, unit: '/s', value: mean(capture), better: 'higher' },
          { name: `autovacuum ${autovacuum}: ratio with / without, whole run`, unit: '', value: mean(capture) / mean(none), better: 'higher', goal: { atLeast: 0.9 } },
          { name: `autovacuum ${autovacuum}: ratio with / without, last minute`, unit: '', value: ratios.at(-1) ?? Number.NaN, better: 'higher', goal: { atLeast: 0.9 } },
          { name: `autovacuum ${autovacuum}: lowest minute's ratio`, unit: '', value: Math.min(...ratios), better: 'higher' },
          { name: `autovacuum ${autovacuum}: change table at the end`, unit: 'KiB', value: Number(size.bytes) / 1024, better: 'lower', goal: { atMost: 1024 } }
        )
      } finally {
        await pgServer.stop()
        rmSync(root, { recursive: true, force: true })
      }
    }
    ctx.print()
    return metrics
  }
}

const ATTACK_NEGOCIOS = 200
const ATTACKERS = 4

/**
 * One citas-live instance leading capture with a subscriber on each of 200 negocios, and a
 * second one (the follower, whose CPU is measured too); 30 s quiet, then 30 s in which four
 * sessions of a role with no privileges do all they can against capture and the bus, while one
 * real change a second is written to a random negocio.
 */
export const captureUnderAttack: StandaloneScenario = {
  name: 'capture under attack',
  standalone: true,
  servers: ['citas-live'],
  describe: (ctx) => `${ATTACK_NEGOCIOS} negocios with one subscriber each on a follower instance, a leader beside it; ${ctx.seconds} s quiet, then ${ctx.seconds} s of ${ATTACKERS} sessions of a role with no privileges, ` +
    'each in a loop: 1,000 rows into the change table (refused), a lock on it (refused), the old advisory lock key, 100 NOTIFYs of a copied message format on the old bus channel; ' +
    'meanwhile one real change a second (a direct INSERT, reaching subscribers through capture)',
  async run (ctx) {
    const name = `${ctx.dbName}_attack`
    const url = await createBenchDatabase(ctx.adminUrl, name, ATTACK_NEGOCIOS, ATTACK_NEGOCIOS * 100)
    const attacker = `${name}_mallory`
    const admin = new pg.Pool({ connectionString: url, max: 2 })
    admin.on('error', () => {})
    await admin.query(`DROP ROLE IF EXISTS ${attacker}`)
    await admin.query(`CREATE ROLE ${attacker} LOGIN PASSWORD 'mallory'`)
    const attackerUrl = new URL(url)
    attackerUrl.username = attacker
    attackerUrl.password = 'mallory'
    const leader = await ctx.startServer('citas-live', { databaseUrl: url, changeCapture: true })
    await sleep(1500)
    const follower = await ctx.startServer('citas-live', { databaseUrl: url, changeCapture: true })
    const tracker = new Tracker()
    const channels = await Promise.all(Array.from({ length: ATTACK_NEGOCIOS }, async (_, i) => await channelOf(admin, negocioId(i))))
    const conn = await connectAll({ port: follower.port, tokens: tokens(ctx, ATTACK_NEGOCIOS, channels), channels, concurrency: 100, timeoutMs: 30_000, tracker })
    const sessions: pg.Client[] = []
    let stop = false
    try {
      if (conn.failed > 0) throw new Error(`${conn.failed} subscribers failed to connect`)
      // Real changes, one a second, the whole time.
      const writes = (async () => {
        // eslint-disable-next-line no-unmodified-loop-condition -- set when the flood phase ends
        while (!stop) {
          const ch = channels[Math.floor(Math.random() * channels.length)] as Channel
          await change(admin, ch.negocio)
          ch.changedAt.push(now())
          await sleep(1000)
        }
      })()
      const phase = async (): Promise<{ cpuMs: number, queries: number, latencies: number[] }> => {
        await until(() => tracker.latencies.length > 0 || stop, 5000)
        tracker.reset()
        const cpu0 = follower.cpuMs() + leader.cpuMs()
        const q0 = (await follower.gauges()).queries + (await leader.gauges()).queries
        await sleep(ctx.seconds * 1000)
        return {
          cpuMs: follower.cpuMs() + leader.cpuMs() - cpu0,
          queries: (await follower.gauges()).queries + (await leader.gauges()).queries - q0,
          latencies: [...tracker.latencies]
        }
      }
      const quiet = await phase()
      let attempts = 0
      let refused = 0
      const copied = `${'A'.repeat(43)}.${'b'.repeat(16)}.1.${Date.now()}.{"origin":"x","changed":["*"]}`
      for (let i = 0; i < ATTACKERS; i++) {
        const s = new pg.Client({ connectionString: attackerUrl.toString() })
        s.on('error', () => {})
        await s.connect()
        sessions.push(s)
        void (async () => {
          const tries = [
            "INSERT INTO citas_live_cambios (negocio_id) SELECT '*' FROM generate_series(1, 1000)",
            'BEGIN; LOCK TABLE citas_live_cambios IN ACCESS SHARE MODE; COMMIT',
            'SELECT pg_try_advisory_lock(1667855457, 1)',
            `SELECT pg_notify('citas_live_bus', '${copied}') FROM generate_series(1, 100)`
          ]
          // eslint-disable-next-line no-unmodified-loop-condition -- set when the flood phase ends
          while (!stop) {
            for (const sql of tries) {
              attempts++
              await s.query(sql).catch(async () => { refused++; await s.query('ROLLBACK').catch(() => {}) })
            }
          }
        })()
      }
      const flood = await phase()
      stop = true
      await writes
      const [, , , lMax] = latencyMetrics(flood.latencies, 'commit to subscriber during the flood') as [Metric, Metric, Metric, Metric]
      const cpuPerSecond = (p: { cpuMs: number }): number => p.cpuMs / ctx.seconds
      return [
        { name: 'server CPU, both instances, quiet', unit: 'ms/s', value: cpuPerSecond(quiet) },
        { name: 'server CPU, both instances, under attack', unit: 'ms/s', value: cpuPerSecond(flood) },
        { name: 'CPU ratio attack / quiet', unit: '', value: flood.cpuMs / quiet.cpuMs, better: 'lower', goal: { atMost: 2 } },
        { name: 'stats queries/s, quiet', unit: '/s', value: quiet.queries / ctx.seconds },
        { name: 'stats queries/s, under attack', unit: '/s', value: flood.queries / ctx.seconds, better: 'lower' },
        { name: 'attack statements', unit: '', value: attempts },
        { name: 'attack statements refused', unit: '', value: refused },
        { name: 'real changes delivered during the attack', unit: '', value: flood.latencies.length, better: 'higher' },
        { ...lMax, goal: { atMost: 2000 } }
      ]
    } finally {
      stop = true
      for (const s of sessions) await s.end().catch(() => {})
      await closeAll(conn.clients)
      await follower.stop()
      await leader.stop()
      await admin.end()
      const cleanup = new pg.Client({ connectionString: ctx.adminUrl })
      await cleanup.connect()
      await cleanup.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
      await cleanup.query(`DROP ROLE IF EXISTS ${attacker}`)
      await cleanup.end()
    }
  }
}

/** What each part of the capture trigger, or a capture without it, costs a single-row INSERT: the variants of `trigger cost`. */
const TRIGGER_VARIANTS: Array<{ name: string, dropCapture?: true, sql?: string, decode?: true }> = [
  { name: 'no trigger', dropCapture: true },
  // The least any row trigger in PL/pgSQL costs.
  { name: 'empty PL/pgSQL trigger', dropCapture: true, sql: 'CREATE FUNCTION bench_empty() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$; CREATE TRIGGER bench_empty BEFORE INSERT ON citas FOR EACH ROW EXECUTE FUNCTION bench_empty()' },
  // The capture trigger running with the writer's rights (which would let any writer fill the table).
  { name: 'capture, SECURITY INVOKER', sql: 'ALTER FUNCTION citas_live_capture() SECURITY INVOKER' },
  { name: 'capture as migrated (SECURITY DEFINER)' },
  // Capture with no trigger at all: a slot streamed by pg_recvlogical while the writers write.
  { name: 'no trigger, logical decoding (test_decoding streamed)', dropCapture: true, sql: "SELECT pg_create_logical_replication_slot('bench', 'test_decoding')", decode: true }
]

/** pg_recvlogical streaming the `bench` slot of `url` to /dev/null until the returned stop is called. */
function streamSlot (url: string): () => Promise<void> {
  const args = ['-d', url, '--slot', 'bench', '--start', '-o', 'skip-empty-xacts=1', '-o', 'include-xids=0', '-f', '/dev/null']
  const child = spawn('pg_recvlogical', args, { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  // Not installed: 'error' then 'close', and no 'exit'.
  child.once('error', (err) => { stderr += err.message })
  const closed = new Promise((resolve) => child.once('close', resolve))
  return async () => {
    // A decoder that stopped early would make the round a round without capture.
    if (child.exitCode !== null || child.pid === undefined) throw new Error(`pg_recvlogical stopped during the round: ${stderr}`)
    child.kill('SIGINT')
    await closed
  }
}

/**
 * The capture trigger's own cost, without any citas-live instance: the same pgbench load as *write
 * tax over time* on databases that differ only in how they capture INSERTs, in BENCH_TRIGGER_ROUNDS (4)
 * rounds of BENCH_TRIGGER_SECONDS (20) each, the order reversed every round. The change table is
 * emptied between rounds (nothing drains it here).
 */
export const triggerCost: StandaloneScenario = {
  name: 'trigger cost',
  standalone: true,
  describe: () => `${WRITERS} pgbench writers (-j 2, -M prepared), one INSERT into citas per transaction, on databases that differ only in how changes are captured: ${TRIGGER_VARIANTS.map((v) => v.name).join('; ')}. ` +
    `${env.BENCH_TRIGGER_ROUNDS ?? '4'} rounds of ${env.BENCH_TRIGGER_SECONDS ?? '20'} s per variant, order reversed each round, on a PostgreSQL of the bench's own (autovacuum off, wal_level logical)`,
  async run (ctx) {
    const rounds = Number(env.BENCH_TRIGGER_ROUNDS ?? '4')
    const seconds = Number(env.BENCH_TRIGGER_SECONDS ?? '20')
    const root = mkdtempSync(path.join(os.tmpdir(), 'citas-live-bench-pg-'))
    chmodSync(root, 0o755)
    const settings = { autovacuum: 'off', max_connections: '100', wal_level: 'logical' }
    const pgServer = await startEmbeddedPostgres({ dir: path.join(root, 'pg'), port: 0, settings })
    try {
      const admin = withDatabase(pgServer.connectionString, 'postgres')
      const script = path.join(root, 'insert.sql')
      writeFileSync(script, INSERT_SCRIPT)
      const urls: string[] = []
      for (const [i, variant] of TRIGGER_VARIANTS.entries()) {
        const url = await createBenchDatabase(admin, `trigger_${i}`, NEGOCIOS, CITAS)
        if (variant.dropCapture === true) await dropCitasTriggers(url)
        if (variant.sql !== undefined) await one(url, variant.sql)
        urls.push(url)
      }
      const tps: number[][] = TRIGGER_VARIANTS.map(() => [])
      for (let round = 0; round < rounds; round++) {
        const order = [...urls.keys()]
        if (round % 2 === 1) order.reverse()
        for (const i of order) {
          const stop = TRIGGER_VARIANTS[i]?.decode === true ? streamSlot(urls[i] as string) : async () => {}
          try {
            tps[i]?.push(await pgbenchRound(urls[i] as string, script, seconds))
          } finally {
            await stop()
          }
          await one(urls[i] as string, 'TRUNCATE citas_live_cambios')
        }
      }
      const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length
      const none = mean(tps[0] ?? [])
      for (const [i, variant] of TRIGGER_VARIANTS.entries()) ctx.print(`- ${variant.name}: TPS per round ${(tps[i] ?? []).map(Math.round).join(', ')}`)
      ctx.print()
      return TRIGGER_VARIANTS.map((variant, i) => ({ name: `${variant.name}: TPS / no trigger`, unit: '', value: mean(tps[i] ?? []) / none, better: 'higher' as const }))
    } finally {
      await pgServer.stop()
      rmSync(root, { recursive: true, force: true })
    }
  }
}

export const captureTrustScenarios = [writeTaxOverTime, triggerCost, captureUnderAttack]
