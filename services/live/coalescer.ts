interface Deferred<V> {
  promise: Promise<V>
  resolve: (value: V) => void
  reject: (err: unknown) => void
}

function deferred<V> (): Deferred<V> {
  let resolve!: (value: V) => void
  let reject!: (err: unknown) => void
  const promise = new Promise<V>((_resolve, _reject) => { resolve = _resolve; reject = _reject })
  // A run nobody awaits (every caller went away) must not become an unhandled rejection.
  promise.catch(() => {})
  return { promise, resolve, reject }
}

interface Slot<O, V> {
  /** The run in flight. */
  current: Deferred<V> | null
  /** The run queued behind it (or waiting out the gap), shared by every request made meanwhile. */
  next: { result: Deferred<V>, options: O } | null
  lastStart: number
  /** The queued run waits for a delay asked for by requestAfter() (not for the gap): it may be started early. */
  delayed?: NodeJS.Timeout
}

export interface CoalescerOptions<O> {
  /**
   * Under load, the least time between the starts of two runs for one key, in ms. A request that
   * finds no run in flight starts one at once; only the run queued behind another waits this out.
   */
  minGapMs?: number
  /** Combines the options of requests that share one run. */
  merge: (a: O, b: O) => O
  now?: () => number
}

/**
 * Single-flight, coalescing runner per key: at most one run in flight per key, and every request
 * made while one runs shares exactly one more run after it. So each caller gets the result of a run
 * that started after its request (it sees every change made before it asked), and a burst of N
 * requests costs about (burst duration / max(run time, minGapMs)) + 1 runs instead of N.
 */
export function createCoalescer<K, O, V> (run: (key: K, options: O) => Promise<V>, opts: CoalescerOptions<O>) {
  const slots = new Map<K, Slot<O, V>>()
  const minGapMs = opts.minGapMs ?? 0
  const now = opts.now ?? Date.now
  let runs = 0
  let waiting = 0

  /** Counts a caller until its promise settles. */
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
    let promise: Promise<V>
    try {
      promise = run(key, options)
    } catch (err) {
      promise = Promise.reject(err)
    }
    // Settle the slot before the waiters resume, so a request they make next finds it idle.
    const settle = (): void => {
      slot.current = null
      if (slot.next === null) {
        slots.delete(key)
        return
      }
      const wait = slot.lastStart + minGapMs - now()
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

  /**
   * Like request(), but a run it has to start waits `delayMs` first, so that requests coming
   * meanwhile share it (change capture's recompute waits a moment for the notify of the same commit).
   */
  function requestAfter (key: K, options: O, delayMs: number): Promise<V> {
    if (delayMs <= 0 || slots.has(key)) return request(key, options)
    const slot: Slot<O, V> = { current: null, next: { result: deferred<V>(), options }, lastStart: 0 }
    slots.set(key, slot)
    slot.delayed = setTimeout(() => {
      slot.delayed = undefined
      startNext(key, slot)
    }, delayMs)
    return track(slot.next?.result.promise as Promise<V>)
  }

  /**
   * Resolves with the result of a run of `key` that starts (or started) at or after `since` (ms, on
   * this coalescer's clock): the one in flight if it started since then, else the queued one (started
   * at once if it only waits out a requestAfter() delay), else a new one.
   */
  function joinSince (key: K, options: O, since: number): Promise<V> {
    const slot = slots.get(key)
    if (slot?.current != null && slot.lastStart >= since) return track(slot.current.promise)
    if (slot?.next != null) {
      slot.next.options = opts.merge(slot.next.options, options)
      const queued = slot.next.result.promise
      if (slot.delayed !== undefined && slot.current === null) {
        clearTimeout(slot.delayed)
        slot.delayed = undefined
        startNext(key, slot)
      }
      return track(queued)
    }
    return request(key, options)
  }

  /** Resolves with the result of a run of `key` that starts after this call. */
  function request (key: K, options: O): Promise<V> {
    const slot = slots.get(key)
    if (slot === undefined) {
      const fresh: Slot<O, V> = { current: null, next: null, lastStart: 0 }
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

  /**
   * Resolves with the result of the run in flight for `key` if there is one (even though it started
   * before this call), else of the next run. For readers that need a current value, not a fresh one.
   */
  function join (key: K, options: O): Promise<V> {
    const slot = slots.get(key)
    if (slot?.current != null) return track(slot.current.promise)
    return request(key, options)
  }

  return {
    request,
    join,
    requestAfter,
    joinSince,
    /** Runs started so far. */
    get runs () { return runs },
    /** Callers waiting for a run's result. */
    get waiting () { return waiting },
    /** Keys with a run in flight or queued. */
    get busy () { return slots.size }
  }
}

export type Coalescer<K, O, V> = ReturnType<typeof createCoalescer<K, O, V>>
