import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { Gauges, Reply, Request } from './ipc.js'

/**
 * `citas-live-public`: citas-live with every adapter of services/adapters on its public path
 * (BENCH_PUBLIC_ADAPTERS names some instead), as if the dependencies' internals had changed: the
 * price of each internal the adapters use.
 */
export type ServerKind = 'baseline' | 'citas-live' | 'citas-live-public'

const here = fileURLToPath(new URL('.', import.meta.url))

function hasTaskset (): boolean {
  try {
    execFileSync('taskset', ['-p', String(process.pid)], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

export const CPU = (() => {
  const clkTck = (() => {
    try { return Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100 } catch { return 100 }
  })()
  return { clkTck, taskset: hasTaskset() }
})()

/** user+system CPU time of a process so far, in ms (from /proc/<pid>/stat). */
export function cpuMs (pid: number): number {
  const { user, system } = cpuSplitMs(pid)
  return user + system
}

/** User and system (kernel) CPU time of a process so far, in ms (from /proc/<pid>/stat). */
export function cpuSplitMs (pid: number): { user: number, system: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // Fields after the command name, which may hold spaces: state is field 3, utime 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return { user: Number(fields[11]) * 1000 / CPU.clkTck, system: Number(fields[12]) * 1000 / CPU.clkTck }
}

/** Resident set size of a process, in KiB (VmRSS in /proc/<pid>/status). */
export function rssKiB (pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m === null ? Number.NaN : Number(m[1])
}

export interface ServerOptions {
  databaseUrl: string
  secret: string
  /** Extra node flags, e.g. --cpu-prof. */
  nodeFlags?: string[]
  /**
   * A file: `perf record` samples the server process (all threads, kernel included, 999 Hz, call
   * graphs) into it until the process ends; the server gets --perf-basic-prof-only-functions so
   * `perf script` names its JavaScript frames (bench/perf-phases.ts sums them up).
   */
  perfRecord?: string
  logLevel?: string
  /**
   * citas-live only: run with change capture on and the default (PostgreSQL) bus, as a production
   * instance does. Default: off, on the memory bus (see bench/server-citas.ts).
   */
  changeCapture?: boolean
}

/** A server under test in its own process, pinned to CPU 0 when taskset exists. */
export class Server {
  readonly pid: number
  private nextId = 1
  private readonly waiting = new Map<number, (reply: Reply) => void>()
  private exited = false

  private perf: ChildProcess | null = null

  private constructor (readonly kind: ServerKind, readonly port: number, private readonly child: ChildProcess) {
    this.pid = child.pid as number
    child.on('message', (reply: Reply) => {
      if (reply.type === 'ready') return
      this.waiting.get(reply.id)?.(reply)
      this.waiting.delete(reply.id)
    })
    child.on('exit', () => { this.exited = true })
  }

  static async start (kind: ServerKind, opts: ServerOptions): Promise<Server> {
    const script = `${here}server-${kind === 'baseline' ? 'baseline' : 'citas'}.js`
    const args = ['--expose-gc', ...(opts.nodeFlags ?? []), ...(opts.perfRecord !== undefined ? ['--perf-basic-prof-only-functions'] : []), script]
    const [cmd, argv] = CPU.taskset
      ? ['taskset', ['-c', process.env.BENCH_SERVER_CPU ?? '0', process.execPath, ...args]]
      : [process.execPath, args]
    const child = spawn(cmd as string, argv as string[], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: {
        ...process.env,
        DATABASE_URL: opts.databaseUrl,
        JWT_SECRET: opts.secret,
        BENCH_LOG_LEVEL: opts.logLevel ?? 'warn',
        BENCH_CHANGE_CAPTURE: opts.changeCapture === true ? 'on' : 'off',
        BENCH_PUBLIC: kind === 'citas-live-public' ? (process.env.BENCH_PUBLIC_ADAPTERS ?? 'all') : ''
      }
    })
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${kind} server did not start within 30 s`)), 30_000)
      child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`${kind} server exited with ${String(code)}`)) })
      child.on('message', (msg: Reply) => {
        if (msg.type === 'ready') { clearTimeout(timer); resolve(msg.port) }
      })
    })
    const server = new Server(kind, port, child)
    if (opts.perfRecord !== undefined) {
      try {
        await server.recordPerf(opts.perfRecord)
      } catch (err) {
        await server.stop()
        throw err
      }
    }
    return server
  }

  /** Starts `perf record` on this process; it ends by itself when the process does. */
  private async recordPerf (file: string): Promise<void> {
    const perf = spawn('perf', ['record', '-q', '-F', '999', '-g', '-p', String(this.pid), '-o', file], { stdio: 'ignore' })
    this.perf = perf
    const failed = new Promise<boolean>((resolve) => {
      perf.once('error', () => resolve(true))
      perf.once('exit', () => resolve(true))
    })
    // perf writes its file's header once it is attached.
    const attached = until(() => existsSync(file), 5000)
    if (await Promise.race([failed, attached.then(() => false)]) || !existsSync(file)) {
      throw new Error(`${this.kind}: perf record did not start (is perf installed, and perf_event_paranoid low enough?)`)
    }
  }

  private async ask (req: Omit<Request, 'id'> & { type: Request['type'] }, timeoutMs = 60_000): Promise<Reply> {
    const id = this.nextId++
    return await new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => { this.waiting.delete(id); reject(new Error(`${this.kind}: no answer to ${req.type}`)) }, timeoutMs)
      this.waiting.set(id, (reply) => { clearTimeout(timer); resolve(reply) })
      this.child.send({ ...req, id } as Request)
    })
  }

  async gauges (): Promise<Gauges> {
    const reply = await this.ask({ type: 'gauges' })
    if (reply.type !== 'gauges') throw new Error('unexpected reply')
    return reply.gauges
  }

  async gc (): Promise<void> { await this.ask({ type: 'gc' }) }

  async heapSnapshot (path: string): Promise<void> {
    await this.ask({ type: 'heap-snapshot', path } as Omit<Request, 'id'> & { type: 'heap-snapshot' }, 300_000)
  }

  cpuMs (): number { return cpuMs(this.pid) }
  cpuSplitMs (): { user: number, system: number } { return cpuSplitMs(this.pid) }
  rssKiB (): number { return rssKiB(this.pid) }

  /** Closes the server (so --cpu-prof can write) and waits for the process to end. */
  async stop (): Promise<void> {
    if (this.exited) return
    const ended = new Promise<void>((resolve) => this.child.once('exit', () => resolve()))
    await this.ask({ type: 'stop' }, 30_000).catch(() => {})
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000)
    await ended
    clearTimeout(timer)
    const perf = this.perf
    if (perf !== null && perf.exitCode === null && perf.signalCode === null) {
      const perfEnded = new Promise<void>((resolve) => perf.once('exit', () => resolve()))
      const perfTimer = setTimeout(() => perf.kill('SIGINT'), 30_000)
      await perfEnded
      clearTimeout(perfTimer)
    }
  }
}

export const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

/** Waits until `done()` holds or `timeoutMs` passes; returns whether it held. */
export async function until (done: () => boolean, timeoutMs: number, stepMs = 10): Promise<boolean> {
  const end = Date.now() + timeoutMs
  while (!done()) {
    if (Date.now() >= end) return false
    await sleep(stepMs)
  }
  return true
}

/** Percentiles of a list of numbers (sorted in place). */
export function percentiles (values: number[]): { p50: number, p90: number, p99: number, max: number } {
  if (values.length === 0) return { p50: Number.NaN, p90: Number.NaN, p99: Number.NaN, max: Number.NaN }
  values.sort((a, b) => a - b)
  const at = (q: number): number => values[Math.min(values.length - 1, Math.floor(q * values.length))] as number
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: values[values.length - 1] as number }
}

export const now = (): number => performance.now()
