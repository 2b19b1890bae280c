import { createCoalescer } from './coalescer.js'
import type { Hub } from './hub.js'
import { channelFor, goneMessage, negocioOf, statsMessage } from './protocol.js'
import { isAppError } from './errors.js'
import type { Snapshot, Stats, StatsService } from './stats.js'

/** What one instance tells the others: stats it computed after a notify it received. */
export interface BusMessage {
  origin: string
  snapshot: Snapshot
}

export interface RefreshOptions {
  /** Push to local subscribers even if the figures did not change (a notify, midnight, a resync). */
  push: boolean
  /** Publish the result on the bus so other instances deliver it (only for notifies this instance received). */
  broadcast: boolean
}

export interface RefreshResult {
  stats: Stats
  /** Local sockets the stats were written to by the run that served this request. */
  delivered: number
}

export interface LiveStatsOptions {
  stats: StatsService
  hub: Hub
  /** This instance's id on the bus; messages with this origin are its own echo. */
  origin: string
  /** Sends a message to the other instances; absent for a single process. */
  broadcast?: (message: BusMessage) => Promise<void>
  /** Least gap between two recomputes of one negocio while changes keep coming, in ms. Default 100. */
  coalesceMs?: number
  /** Called with errors nobody awaits (background recomputes, bus publishes). */
  onError?: (err: unknown, context: string) => void
}

interface Entry {
  snapshot: Snapshot
  /** The serialized stats message, made once and written to every socket that subscribes. */
  message: string
}

const sameFigures = (a: Stats, b: Stats): boolean =>
  a.citas_hoy === b.citas_hoy && a.total_citas === b.total_citas &&
  a.citas_completadas === b.citas_completadas && a.citas_canceladas === b.citas_canceladas

const MAX_TIMER_MS = 2 ** 31 - 1

const isNotFound = (err: unknown): boolean => isAppError(err) && err.code === 'not_found'

/**
 * Keeps the stats of every channel with local subscribers fresh and cheap: coalesced single-flight
 * recomputes per negocio, a snapshot cache for subscribes, delivery of other instances' results,
 * and a recompute at each business's local midnight. Plain TypeScript: timers are its only I/O
 * besides the stats service and the hub it is given.
 */
export function createLiveStats (opts: LiveStatsOptions) {
  const { stats, hub, origin } = opts
  const onError = opts.onError ?? (() => {})
  const cache = new Map<string, Entry>()
  const coalescer = createCoalescer<string, RefreshOptions, RefreshResult>(run, {
    minGapMs: opts.coalesceMs ?? 100,
    merge: (a, b) => ({ push: a.push || b.push, broadcast: a.broadcast || b.broadcast }),
    now: () => Date.now()
  })
  let midnightTimer: NodeJS.Timeout | undefined
  let midnightAt = Number.POSITIVE_INFINITY
  let midnightChecks = 0
  let closed = false

  hub.onEmpty((channel) => {
    const negocioId = negocioOf(channel)
    if (negocioId !== null) cache.delete(negocioId)
  })

  /** Stores a snapshot unless a newer one is cached; returns the entry when it was stored. */
  function store (negocioId: string, snapshot: Snapshot): Entry | undefined {
    const prev = cache.get(negocioId)
    if (prev !== undefined && prev.snapshot.version > snapshot.version) return undefined
    const entry = { snapshot, message: statsMessage(snapshot.stats) }
    cache.set(negocioId, entry)
    armMidnight(snapshot.dayEndsAt)
    return entry
  }

  async function run (negocioId: string, options: RefreshOptions): Promise<RefreshResult> {
    const channel = channelFor(negocioId)
    let snapshot: Snapshot
    try {
      snapshot = await stats.computeSnapshot(negocioId)
    } catch (err) {
      // A negocio that had stats is gone (deleted): its subscribers learn it and are dropped, rather
      // than keeping its last figures forever. A first subscribe to an unknown id is the route's to answer.
      if (isNotFound(err) && cache.delete(negocioId)) hub.dropChannel(channel, goneMessage(channel))
      throw err
    }
    let delivered = 0
    if (hub.subscriberCount(channel) > 0) {
      const prev = cache.get(negocioId)
      const entry = store(negocioId, snapshot)
      if (entry !== undefined && (options.push || prev === undefined || !sameFigures(prev.snapshot.stats, snapshot.stats))) {
        delivered = hub.publish(channel, entry.message)
      }
    }
    if (options.broadcast && opts.broadcast !== undefined) {
      opts.broadcast({ origin, snapshot }).catch((err: unknown) => onError(err, 'bus publish failed'))
    }
    return { stats: snapshot.stats, delivered }
  }

  /** Recomputes a negocio with a run that starts after this call; resolves once it was pushed. */
  function refresh (negocioId: string, options: RefreshOptions): Promise<RefreshResult> {
    return coalescer.request(negocioId, options)
  }

  /** The cached stats message of a negocio, if it is still of today. */
  function cached (negocioId: string): string | undefined {
    const entry = cache.get(negocioId)
    if (entry === undefined || entry.snapshot.dayEndsAt <= stats.now().getTime()) return undefined
    return entry.message
  }

  /**
   * Makes sure the subscribers of a negocio receive its stats: a run already in flight will push
   * them (its result reaches everyone subscribed when it ends), so a new subscriber joins it
   * rather than queueing another; 5,000 subscribes to one cold channel cost one query.
   */
  function load (negocioId: string): Promise<RefreshResult> {
    return coalescer.join(negocioId, { push: true, broadcast: false })
  }

  /** Another instance computed stats after a notify: deliver them here. */
  function deliver (message: BusMessage): void {
    if (message.origin === origin) return
    const negocioId = message.snapshot.stats.negocio_id
    const channel = channelFor(negocioId)
    if (hub.subscriberCount(channel) === 0) return
    const entry = store(negocioId, message.snapshot)
    if (entry !== undefined) hub.publish(channel, entry.message)
  }

  function background (negocioId: string, options: RefreshOptions, context: string): void {
    refresh(negocioId, options).catch((err: unknown) => {
      if (!isNotFound(err)) onError(err, `${context} (${negocioId})`)
    })
  }

  /** A row of citas changed in the database (change capture); '*' means any may have. */
  function changed (negocioId: string): void {
    if (negocioId === '*') {
      resyncAll(false)
      return
    }
    if (hub.subscriberCount(channelFor(negocioId)) > 0) background(negocioId, { push: false, broadcast: false }, 'change capture recompute failed')
  }

  /** Recomputes every channel with local subscribers (after a bus reconnect, an outage, or periodically). */
  function resyncAll (push: boolean): void {
    for (const channel of hub.channelNames()) {
      const negocioId = negocioOf(channel)
      if (negocioId !== null) background(negocioId, { push, broadcast: false }, 'resync failed')
    }
  }

  function armMidnight (at: number): void {
    if (closed || at >= midnightAt) return
    if (midnightTimer !== undefined) clearTimeout(midnightTimer)
    midnightAt = at
    const delay = Math.min(Math.max(at - stats.now().getTime(), 0), MAX_TIMER_MS)
    midnightTimer = setTimeout(onMidnight, delay)
    midnightTimer.unref()
  }

  /** Some business's day ended: recompute those whose cached "today" is over, re-arm for the next. */
  function onMidnight (): void {
    midnightChecks++
    midnightTimer = undefined
    midnightAt = Number.POSITIVE_INFINITY
    const nowMs = stats.now().getTime()
    let next = Number.POSITIVE_INFINITY
    for (const [negocioId, entry] of cache) {
      if (entry.snapshot.dayEndsAt <= nowMs) background(negocioId, { push: true, broadcast: false }, 'midnight recompute failed')
      else next = Math.min(next, entry.snapshot.dayEndsAt)
    }
    if (next !== Number.POSITIVE_INFINITY) armMidnight(next)
  }

  function close (): void {
    closed = true
    if (midnightTimer !== undefined) clearTimeout(midnightTimer)
  }

  return {
    refresh,
    load,
    cached,
    deliver,
    changed,
    resyncAll,
    close,
    /** Negocios with a cached snapshot. */
    get cacheSize () { return cache.size },
    /** Recompute runs started (each is one stats query). */
    get runs () { return coalescer.runs },
    /** Times the day-boundary timer fired (whether or not a day had ended). */
    get midnightChecks () { return midnightChecks },
    /** Callers (notifies, subscribes) waiting for a recompute. */
    get waiting () { return coalescer.waiting }
  }
}

export type LiveStats = ReturnType<typeof createLiveStats>
