interface Deferred<V> {
  promise: Promise<V>
  resolve: (value: V) => void
  reject: (err: unknown) => void
}

function deferred<V> (): Deferred<V> {
  let resolve!: (value: V) => void
  let reject!: (err: unknown) => void
  const promise = new Promise<V>((_resolve, _reject) => { resolve = _resolve; reject = _reject })
  // A run nobody awaits must not become an unhandled rejection.
  promise.catch(() => {})
  return { promise, resolve, reject }
}

interface Slot<O, V> {
  current: Deferred<V> | null
  /** The run queued behind `current` (or waiting out the gap), shared by every request made meanwhile. */
  next: { result: Deferred<V>, options: O } | null
  lastStart: number
  /** Runs in a row that ended with a request queued behind them: above one, the key is busy. */
  streak: number
  /** Two runs started within gapMs of each other: the next starts gapMs after the last. */
  hot: boolean
  /** Set while the slot outlives its run, until gapMs after that run's start. */
  cooling: NodeJS.Timeout | undefined
}

export interface CoalescerOptions<O> {
  /**
   * Once two runs of a key start within this many ms of each other, the key is hot: its next runs
   * start at least this far apart, each shared by every request made meanwhile. A request that
   * comes after a gap this long, or the first that comes within it, is not held back. Default 0.
   */
  gapMs?: number
  /**
   * Share of the time one key's runs may take while requests keep coming (0..1]: once two runs in a
   * row had requests queued behind them, the next waits d * (1 / share - 1) ms at least after a run
   * of d ms. A request that only once overlaps a run is not held back. Default 1 (no wait).
   */
  maxBusyShare?: number
  merge: (a: O, b: O) => O
  now?: () => number
}

// Single-flight per key: requests made during a run share one more run after it, so each caller sees every
// change made before it asked, and a burst costs ~duration / max(run, gapMs) + 2 runs.
export function createCoalescer<K, O, V> (run: (key: K, options: O) => Promise<V>, opts: CoalescerOptions<O>) {
  const slots = new Map<K, Slot<O, V>>()
  const gapMs = opts.gapMs ?? 0
  const idleFactor = 1 / (opts.maxBusyShare ?? 1) - 1
  const now = opts.now ?? Date.now
  let runs = 0
  let waiting = 0

  function track (promise: Promise<V>): Promise<V> {
    waiting++
    const done = (): void => { waiting-- }
    promise.then(done, done)
    return promise
  }

  function start (key: K, slot: Slot<O, V>, options: O, result: Deferred<V>): void {
    slot.current = result
    slot.lastStart = now()
    runs++
    // A run that throws at once rejects like one that fails later.
    const promise = new Promise<V>((resolve) => { resolve(run(key, options)) })
    // Settle the slot before the waiters resume, so a request they make next finds it idle.
    const settle = (): void => {
      slot.current = null
      const ran = now() - slot.lastStart
      if (slot.next === null) {
        if (ran >= gapMs) slots.delete(key)
        else slot.cooling = setTimeout(cooled, gapMs - ran, key, slot).unref()
        return
      }
      slot.streak++
      const wait = Math.max(slot.hot ? gapMs - ran : 0, slot.streak > 1 ? ran * idleFactor : 0)
      if (ran < gapMs) slot.hot = true
      if (wait <= 0) startNext(key, slot)
      else setTimeout(() => { startNext(key, slot) }, wait)
    }
    promise.then((value) => { settle(); result.resolve(value) }, (err: unknown) => { settle(); result.reject(err) })
  }

  /** The gap after a run is over: the request made meanwhile starts, or the key is forgotten. */
  function cooled (key: K, slot: Slot<O, V>): void {
    slot.cooling = undefined
    if (slot.next !== null) startNext(key, slot)
    else slots.delete(key)
  }

  function startNext (key: K, slot: Slot<O, V>): void {
    const next = slot.next as { result: Deferred<V>, options: O }
    slot.next = null
    start(key, slot, next.options, next.result)
  }

  /** The result of a run of `key` started at or after `since`. */
  function joinSince (key: K, options: O, since: number): Promise<V> {
    const slot = slots.get(key)
    if (slot?.current != null && slot.lastStart >= since) return track(slot.current.promise)
    return request(key, options)
  }

  /** The result of a run of `key` that starts after this call. */
  function request (key: K, options: O): Promise<V> {
    const slot = slots.get(key)
    if (slot === undefined || (slot.cooling !== undefined && !slot.hot)) {
      let fresh = slot
      if (fresh === undefined) {
        fresh = { current: null, next: null, lastStart: 0, streak: 0, hot: false, cooling: undefined }
        slots.set(key, fresh)
      } else {
        // The second run within the gap starts at once; from now on the key waits it out.
        clearTimeout(fresh.cooling)
        fresh.cooling = undefined
        fresh.hot = true
      }
      const result = deferred<V>()
      start(key, fresh, options, result)
      return track(result.promise)
    }
    // A run is in flight or the queued one is waiting out the gap: share the queued one (a caller
    // waits for it now, so the gap's timer keeps the process up).
    slot.cooling?.ref()
    if (slot.next === null) slot.next = { result: deferred<V>(), options }
    else slot.next.options = opts.merge(slot.next.options, options)
    return track(slot.next.result.promise)
  }

  /** The run in flight even if it started before this call, else the next: for a current value, not a fresh one. */
  const join = (key: K, options: O): Promise<V> => joinSince(key, options, Number.NEGATIVE_INFINITY)

  return {
    request, join, joinSince,
    get runs () { return runs },
    get waiting () { return waiting },
    /** Keys with a run in flight or queued, or whose last run started less than gapMs ago. */
    get busy () { return slots.size }
  }
}
