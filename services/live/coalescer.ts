function deferred<V> () {
  let resolve!: (value: V) => void
  let reject!: (err: unknown) => void
  const promise = new Promise<V>((_resolve, _reject) => { resolve = _resolve; reject = _reject })
  // A run nobody awaits must not become an unhandled rejection.
  promise.catch(() => {})
  return { promise, resolve, reject }
}
type Deferred<V> = ReturnType<typeof deferred<V>>

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
  /** Once two runs of a key start within this many ms, its next runs start this far apart, shared by requests meanwhile. Default 0. */
  gapMs?: number
  /** Share (0..1] of the time a busy key's runs may take: after a run of d ms the next waits d * (1 / share - 1). Default 1. */
  maxBusyShare?: number
  merge: (a: O, b: O) => O
  now?: () => number
}

// Single-flight per key: requests during a run share the next, which sees every change before them; a burst ~d / max(run, gapMs) + 2 runs.
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
    let slot = slots.get(key)
    if (slot !== undefined && (slot.cooling === undefined || slot.hot)) {
      // A run is in flight or the queued one waits out the gap: share that one (its caller now keeps the gap's timer up).
      slot.cooling?.ref()
      if (slot.next === null) slot.next = { result: deferred<V>(), options }
      else slot.next.options = opts.merge(slot.next.options, options)
      return track(slot.next.result.promise)
    }
    if (slot === undefined) {
      slot = { current: null, next: null, lastStart: 0, streak: 0, hot: false, cooling: undefined }
      slots.set(key, slot)
    } else {
      // The second run within the gap starts at once; from now on the key waits it out.
      clearTimeout(slot.cooling)
      slot.cooling = undefined
      slot.hot = true
    }
    const result = deferred<V>()
    start(key, slot, options, result)
    return track(result.promise)
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
