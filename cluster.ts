/**
 * WORKERS > 1: this process forks the workers (each a whole server, an instance on the bus) and
 * keeps them: node:cluster shares the port among them, a worker that dies is forked again, SIGTERM
 * or SIGINT closes them all within the grace period, and /metrics adds up every worker's figures.
 */
import cluster, { type Address, type Worker } from 'node:cluster'
import type { Logger } from 'pino'
import { AggregatorRegistry, type Registry } from 'prom-client'
import { createMetricsServer } from './plugins/metrics.js'

export interface PrimaryOptions {
  workers: number
  /** Added to each worker's environment (the embedded demo's DATABASE_URL and JWT_SECRET). */
  env: Record<string, string>
  /** Workers still running this long after SIGTERM are killed, in ms. */
  graceMs: number
  /** METRICS_PORT: served here, for the whole cluster. */
  metrics?: { port: number, host: string }
  log: Pick<Logger, 'info' | 'error'>
}

const METRICS = 'citas-live:metrics'
const SHUTDOWN = 'citas-live:shutdown'
/** Crashes within this window make the next fork wait longer (500 ms, doubling, at most 30 s). */
const CRASH_WINDOW_MS = 60_000

/** Starts the workers; `listening` resolves with the address once every worker listens. */
export function runPrimary (opts: PrimaryOptions) {
  const { log } = opts
  const aggregator = new AggregatorRegistry()
  const crashes: number[] = []
  let stopping = false
  let listeningCount = 0
  const listening = new Promise<Address>((resolve) => {
    cluster.on('listening', (_worker, address) => { if (++listeningCount === opts.workers) resolve(address) })
  })
  let resolveStopped!: () => void
  const stopped = new Promise<void>((resolve) => { resolveStopped = resolve })

  const fork = (): void => { cluster.fork(opts.env) }
  cluster.on('message', (worker: Worker, message: { type?: string, id?: number }) => {
    if (message?.type !== METRICS) return
    aggregator.clusterMetrics().then((text) => { worker.send({ type: METRICS, id: message.id, text }) }, (err: unknown) => {
      worker.send({ type: METRICS, id: message.id, error: (err as Error).message })
    })
  })

  cluster.on('exit', (worker: Worker, code: number | null, signal: string | null) => {
    if (stopping) {
      if (Object.keys(cluster.workers ?? {}).length === 0) resolveStopped()
      return
    }
    const now = Date.now()
    crashes.push(now)
    while (crashes[0] !== undefined && crashes[0] < now - CRASH_WINDOW_MS) crashes.shift()
    const delay = Math.min(30_000, 500 * 2 ** (crashes.length - 1))
    log.error({ worker: worker.process.pid, code, signal, restartInMs: delay }, 'a worker died: starting another')
    setTimeout(() => { if (!stopping) fork() }, delay).unref()
  })

  const metricsServer = opts.metrics && createMetricsServer(() => aggregator.clusterMetrics(), aggregator.contentType, log).listen(opts.metrics.port, opts.metrics.host)

  /** Asks every worker to close (as SIGTERM would), and kills those still running after the grace period. */
  function stop (signal: string): Promise<void> {
    if (!stopping) {
      stopping = true
      const workers = Object.values(cluster.workers ?? {}) as Worker[]
      log.info({ signal, workers: workers.length }, 'shutting down the workers')
      metricsServer?.close()
      if (workers.length === 0) resolveStopped()
      for (const worker of workers) if (worker.isConnected()) worker.send({ type: SHUTDOWN })
      setTimeout(() => {
        for (const worker of Object.values(cluster.workers ?? {}) as Worker[]) worker.process.kill('SIGKILL')
      }, opts.graceMs + 2000).unref()
    }
    return stopped
  }

  for (let i = 0; i < opts.workers; i++) fork()
  return { listening, stopped, stop }
}

/** In a worker: the registry the primary adds up, and a scrape of the whole cluster for GET /metrics. */
export function workerMetrics (register: Registry): () => Promise<string> {
  // Made once in a worker, an AggregatorRegistry answers the primary's requests (with the registries set here).
  void new AggregatorRegistry()
  AggregatorRegistry.setRegistries([register])
  let next = 0
  return async () => await new Promise<string>((resolve, reject) => {
    const id = ++next
    const timer = setTimeout(() => { settle({ error: 'the primary did not answer' }) }, 10_000).unref()
    const settle = (message: { text?: string, error?: string }): void => {
      clearTimeout(timer)
      process.off('message', onMessage)
      if (message.text !== undefined) resolve(message.text)
      else reject(new Error(message.error ?? 'no metrics from the primary'))
    }
    const onMessage = (message: { type?: string, id?: number, text?: string, error?: string }): void => {
      if (message?.type === METRICS && message.id === id) settle(message)
    }
    process.on('message', onMessage)
    process.send?.({ type: METRICS, id })
  })
}

/** In a worker: `close`, once, when the primary asks or when the primary is gone. */
export function onPrimaryShutdown (close: () => void): void {
  let asked = false
  const closeOnce = (): void => {
    if (asked) return
    asked = true
    close()
  }
  process.on('message', (message: { type?: string }) => { if (message?.type === SHUTDOWN) closeOnce() })
  process.once('disconnect', closeOnce)
}
