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
    /** A probe is scheduled or running (only ever while down). */
    get isProbing () { return timer !== undefined || probing },
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

export interface ReadinessOptions {
  /** Resolves when the database answers (e.g. `SELECT 1`). */
  probe: () => Promise<unknown>
  /** A result younger than this is answered without probing again, in ms. Default 1000. */
  refreshMs?: number
  /** A probe still unanswered after this long means the database is not answering, in ms. Default 2000. */
  hangAfterMs?: number
  /**
   * How long one check waits for a probe it started before answering from what it knows, in ms.
   * Default 80. Until a first probe has answered there is nothing to answer from: a check then
   * waits for it up to `hangAfterMs` (a slow first connection on a busy machine is not an outage).
   */
  waitMs?: number
}

export type Readiness = { ready: true } | { ready: false, reason: 'unreachable' | 'not_answering' | 'unknown' }

/**
 * Readiness for probes that may come thousands of times a second and must answer at once even when
 * the database hangs: at most one probe query per `refreshMs`, never more than one in flight, and a
 * check waits at most `waitMs` for it before answering from the last result.
 */
export function createReadiness (opts: ReadinessOptions) {
  const refreshMs = opts.refreshMs ?? 1000
  const hangAfterMs = opts.hangAfterMs ?? 2000
  const waitMs = opts.waitMs ?? 80
  let last: { ok: boolean, at: number } | undefined
  let inFlight: { since: number, done: Promise<void> } | undefined

  function refresh (): Promise<void> {
    if (inFlight !== undefined) return inFlight.done
    const since = Date.now()
    const done = opts.probe().then(
      () => { last = { ok: true, at: Date.now() } },
      () => { last = { ok: false, at: Date.now() } }
    ).finally(() => { inFlight = undefined })
    inFlight = { since, done }
    return done
  }

  function answer (): Readiness {
    if (inFlight !== undefined && Date.now() - inFlight.since >= hangAfterMs) return { ready: false, reason: 'not_answering' }
    if (last === undefined) return { ready: false, reason: 'unknown' }
    return last.ok ? { ready: true } : { ready: false, reason: 'unreachable' }
  }

  return {
    /** The database's state, probing it first when the last result is older than `refreshMs`. */
    async check (): Promise<Readiness> {
      if (last === undefined || Date.now() - last.at >= refreshMs) {
        let timer: ReturnType<typeof setTimeout> | undefined
        const wait = last === undefined ? Math.max(waitMs, hangAfterMs - (Date.now() - (inFlight?.since ?? Date.now()))) : waitMs
        await Promise.race([refresh(), new Promise<void>(resolve => { timer = setTimeout(resolve, wait) })])
        clearTimeout(timer)
      }
      return answer()
    },
    /** Forgets the last result, so the next check probes (e.g. after a failure seen elsewhere). */
    invalidate (): void { last = undefined },
    /** Starts a probe now (at boot), so the first check has a result to answer from. */
    prime (): void { refresh().catch(() => {}) }
  }
}
