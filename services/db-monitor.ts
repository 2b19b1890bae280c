/**
 * Notices that the database went away and tells when it is back. Callers report failures (a stats
 * query that could not reach the database); while down, one timer probes until the probe answers,
 * then every `onUp` listener runs once. No timer runs while the database is up.
 */
export interface DbMonitorOptions {
  /** Resolves when the database answers (e.g. `SELECT 1`). */
  probe: () => Promise<unknown>
  /** Time between probes while down, in ms. Default 1000. */
  probeIntervalMs?: number
  /** Called for errors of onUp listeners, which must not escape. */
  onError?: (err: unknown) => void
}

export function createDbMonitor (opts: DbMonitorOptions) {
  const probeIntervalMs = opts.probeIntervalMs ?? 1000
  const upListeners = new Set<() => unknown>()
  const downListeners = new Set<(err: unknown) => unknown>()
  let up = true
  let timer: ReturnType<typeof setTimeout> | undefined
  let probing = false
  let stopped = false
  let outages = 0

  function run (listeners: Iterable<(arg?: unknown) => unknown>, arg?: unknown): void {
    for (const fn of listeners) {
      try {
        const r = fn(arg)
        if (r instanceof Promise) r.catch((err: unknown) => opts.onError?.(err))
      } catch (err) {
        opts.onError?.(err)
      }
    }
  }

  function schedule (): void {
    if (stopped || timer !== undefined) return
    timer = setTimeout(probeOnce, probeIntervalMs)
    timer.unref()
  }

  async function probeOnce (): Promise<void> {
    timer = undefined
    if (stopped || up || probing) return
    probing = true
    try {
      await opts.probe()
    } catch {
      probing = false
      schedule()
      return
    }
    probing = false
    if (stopped || up) return
    up = true
    run(upListeners)
  }

  return {
    /** The database failed to answer: mark it down and start probing (no-op when already down). */
    reportFailure (err?: unknown): void {
      if (stopped || !up) return
      up = false
      outages++
      run(downListeners, err)
      schedule()
    },
    onUp (fn: () => unknown): void { upListeners.add(fn) },
    onDown (fn: (err: unknown) => unknown): void { downListeners.add(fn) },
    get isUp () { return up },
    get outageCount () { return outages },
    stop (): void {
      stopped = true
      if (timer !== undefined) clearTimeout(timer)
      timer = undefined
    }
  }
}

export type DbMonitor = ReturnType<typeof createDbMonitor>

/**
 * Runs `task` for every item with at most `concurrency` at a time; never rejects (errors go to
 * `onError`). Used to recompute every subscribed channel without flooding the pool.
 */
export async function forEachLimited<T> (items: Iterable<T>, concurrency: number, task: (item: T) => Promise<unknown>, onError: (err: unknown, item: T) => void): Promise<void> {
  const iterator = items[Symbol.iterator]()
  async function worker (): Promise<void> {
    for (let next = iterator.next(); next.done !== true; next = iterator.next()) {
      try {
        await task(next.value)
      } catch (err) {
        onError(err, next.value)
      }
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker))
}
