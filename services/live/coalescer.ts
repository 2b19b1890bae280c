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
}

export interface CoalescerOptions<O> {
  /** Least time between two starts for one key, in ms; only a run queued behind another waits it out. */
  minGapMs?: number
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
// change made before it asked, and a burst costs ~duration / max(run, minGapMs) + 1 runs.
export function createCoalescer<K, O, V> (run: (key: K, options: O) => Promise<V>, opts: CoalescerOptions<O>) {
  const slots = new Map<K, Slot<O, V>>()
  const minGapMs = opts.minGapMs ?? 0
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
      if (slot.next === null) {
        slots.delete(key)
        return
      }
      slot.streak++
      const ran = now() - slot.lastStart
      const wait = Math.max(minGapMs - ran, slot.streak > 1 ? ran * idleFactor : 0)
      if (wait <= 0) startNext(key, slot)
      else setTimeout(() => { startNext(key, slot) }, wait)
    }
    promise.then((value) => { settle(); result.resolve(value) }, (err: unknown) => { settle(); result.reject(err) })
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
    if (slot === undefined) {
      const fresh: Slot<O, V> = { current: null, next: null, lastStart: 0, streak: 0 }
      slots.set(key, fresh)
      const result = deferred<V>()
      start(key, fresh, options, result)
      return track(result.promise)
    }
    // A run is in flight or the queued one is waiting out the gap: share the queued one.
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
    /** Keys with a run in flight or queued. */
    get busy () { return slots.size }
  }
}
