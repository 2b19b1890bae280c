/** Database outages: callers report failures; while down one timer probes, then `onUp` listeners run once. */
export interface DbMonitorOptions {
  /** Resolves when the database answers (e.g. `SELECT 1`). */
  probe: () => Promise<unknown>
  probeIntervalMs?: number
  /** For errors of listeners, which must not escape. */
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

  /** Calls each listener at once; its throw and its promise's rejection both go to onError. */
  function run (listeners: Iterable<(arg?: unknown) => unknown>, arg?: unknown): void {
    for (const fn of listeners) new Promise((resolve) => { resolve(fn(arg)) }).catch((err: unknown) => opts.onError?.(err))
  }

  function schedule (): void {
    if (stopped || timer !== undefined) return
    timer = setTimeout(probeOnce, probeIntervalMs).unref()
  }

  async function probeOnce (): Promise<void> {
    timer = undefined
    if (stopped || up || probing) return
    probing = true
    const answered = await opts.probe().then(() => true, () => false)
    probing = false
    if (!answered) schedule()
    else if (!stopped && !up) {
      up = true
      run(upListeners)
    }
  }

  return {
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
    get isProbing () { return timer !== undefined || probing },
    get outageCount () { return outages },
    stop (): void {
      stopped = true
      clearTimeout(timer)
      timer = undefined
    }
  }
}

export type DbMonitor = ReturnType<typeof createDbMonitor>

/** Runs `task` for every item, at most `concurrency` at a time; never rejects (errors go to `onError`). */
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

export interface ReadinessOptions {
  probe: () => Promise<unknown>
  /** A result younger than this is answered without probing again, in ms. Default 1000. */
  refreshMs?: number
  /** A probe unanswered this long means the database is not answering, in ms. Default 2000. */
  hangAfterMs?: number
  /** How long a check waits for its probe, in ms (default 80); the first waits up to `hangAfterMs` (a slow first connect is no outage). */
  waitMs?: number
}

export type Readiness = { ready: true } | { ready: false, reason: 'unreachable' | 'not_answering' | 'unknown' }

/** Readiness that answers at once even when the database hangs: one probe per `refreshMs` at most, one in flight. */
export function createReadiness (opts: ReadinessOptions) {
  const refreshMs = opts.refreshMs ?? 1000
  const hangAfterMs = opts.hangAfterMs ?? 2000
  const waitMs = opts.waitMs ?? 80
  let last: { ok: boolean, at: number } | undefined
  let inFlight: { since: number, done: Promise<void> } | undefined

  function refresh (): Promise<void> {
    if (inFlight !== undefined) return inFlight.done
    const since = Date.now()
    const done = opts.probe().then(() => true, () => false)
      .then((ok) => { last = { ok, at: Date.now() } })
      .finally(() => { inFlight = undefined })
    inFlight = { since, done }
    return done
  }

  function answer (): Readiness {
    if (inFlight !== undefined && Date.now() - inFlight.since >= hangAfterMs) return { ready: false, reason: 'not_answering' }
    if (last === undefined) return { ready: false, reason: 'unknown' }
    return last.ok ? { ready: true } : { ready: false, reason: 'unreachable' }
  }

  return {
    async check (): Promise<Readiness> {
      if (last === undefined || Date.now() - last.at >= refreshMs) {
        let timer: ReturnType<typeof setTimeout> | undefined
        const wait = last === undefined ? Math.max(waitMs, hangAfterMs - (Date.now() - (inFlight?.since ?? Date.now()))) : waitMs
        await Promise.race([refresh(), new Promise<void>(resolve => { timer = setTimeout(resolve, wait) })])
        clearTimeout(timer)
      }
      return answer()
    },
    /** Forgets the last result, so the next check probes. */
    invalidate (): void { last = undefined },
    prime (): void { refresh().catch(() => {}) }
  }
}
