import { createCoalescer } from './coalescer.js'
import { Prepared, type Connection, type Hub } from './hub.js'
import { channelFor, goneMessage, negocioOf, statsMessage } from './messages.js'
import { isAppError, type ErrorCode } from '../http/errors.js'
import { forEachLimited } from './db-monitor.js'
import type { Snapshot, Stats, StatsService } from './stats.js'

/**
 * What one instance tells the others: stats it computed after a notify it received, or negocio ids
 * whose citas changed (change capture drained them; '*' = any).
 */
export type BusMessage = { origin: string, snapshot: Snapshot } | { origin: string, changed: string[] }

/** Whether the other instances heard of a change: `none` when there are none (memory bus). */
export type BusOutcome = 'sent' | 'unreachable' | 'none'

export interface RefreshOptions {
  /** Publish the result on the bus so other instances deliver it (only for notifies this instance received). */
  broadcast: boolean
}

export interface RefreshResult {
  stats: Stats
  /** Local sockets the stats were written to by the run that served this request. */
  delivered: number
  /** The stats message subscribers of the channel have now; undefined when it has none (nothing was serialized). */
  message: Prepared | undefined
  /** Whether the run wrote the message to the channel's subscribers (it does only when the figures changed). */
  published: boolean
  /** Whether the run published its result on the bus (`broadcast`), and how that went. */
  broadcast: boolean
  bus: BusOutcome
  snapshot: Snapshot
}

/** What change capture says after reading every change committed before it was asked. */
export interface CaptureBarrier {
  /** False when this instance does not drain the change table (it is not the leader): the caller recomputes. */
  drained: boolean
  /** Whether the drained changes reached the other instances. */
  delivered: boolean
}

export interface LiveStatsOptions {
  stats: StatsService
  hub: Hub
  /** This instance's id on the bus; messages with this origin are its own echo. */
  origin: string
  /** Sends a message to the other instances; absent for a single process. */
  broadcast?: (message: BusMessage) => Promise<void>
  /**
   * With change capture: drains the change table and hands every change committed before the call
   * on (locally through changed(), to the others on the bus). A notify waits for it instead of
   * recomputing, so a commit that is both captured and notified costs one stats query.
   */
  barrier?: () => Promise<CaptureBarrier>
  /** Least gap between two recomputes of one negocio while changes keep coming, in ms. Default 100. */
  coalesceMs?: number
  /** Recomputes running at once in a resync of every channel. Default 4. */
  resyncConcurrency?: number
  /** A negocio change capture reports is recomputed this much later (ms), for a notify of the same commit to share the query. Default 0. */
  captureGraceMs?: number
  /** Change capture's '*' (recompute every shown channel) starts a resync at most this often, in ms; one that comes sooner waits. Default 5000. */
  resyncIntervalMs?: number
  /** Called with errors nobody awaits (background recomputes, bus publishes). */
  onError?: (err: unknown, context: string) => void
}

interface Entry {
  snapshot: Snapshot
  /** The stats message, serialized (and framed, per transport) once for every socket that subscribes. */
  message: Prepared
}

const sameFigures = (a: Stats, b: Stats): boolean =>
  a.citas_hoy === b.citas_hoy && a.total_citas === b.total_citas &&
  a.citas_completadas === b.citas_completadas && a.citas_canceladas === b.citas_canceladas

const MAX_TIMER_MS = 2 ** 31 - 1

const isNotFound = (err: unknown): boolean => isAppError(err) && err.code === 'not_found'

/**
 * Keeps the stats of every channel with local subscribers fresh and cheap: coalesced single-flight
 * recomputes per negocio, a snapshot cache for subscribes, delivery of other instances' results and
 * changes, and a recompute at each business's local midnight. A channel's subscribers never get the
 * same figures twice in a row: a run pushes only when the figures differ from what they have.
 * Plain TypeScript: timers are its only I/O besides the stats service, the hub and the callbacks it is given.
 */
export function createLiveStats (opts: LiveStatsOptions) {
  const { stats, hub, origin } = opts
  const onError = opts.onError ?? (() => {})
  const cache = new Map<string, Entry>()
  const captureGraceMs = opts.captureGraceMs ?? 0
  const coalescer = createCoalescer<string, RefreshOptions, RefreshResult>(run, {
    minGapMs: opts.coalesceMs ?? 100,
    merge: (a, b) => ({ broadcast: a.broadcast || b.broadcast }),
    now: () => Date.now()
  })
  let midnightTimer: NodeJS.Timeout | undefined
  let midnightAt = Number.POSITIVE_INFINITY
  let midnightChecks = 0
  let closed = false
  /** The last resync: when it started, its completion, and whether every recompute in it succeeded. */
  let lastResync: { startedAt: number, done: Promise<void>, ok: boolean } | undefined
  const resyncIntervalMs = opts.resyncIntervalMs ?? 5000
  let starResyncAt = Number.NEGATIVE_INFINITY
  let starTimer: NodeJS.Timeout | undefined
  let starResyncs = 0

  hub.onEmpty((channel) => {
    const negocioId = negocioOf(channel)
    if (negocioId !== null) cache.delete(negocioId)
  })

  /**
   * Stores a snapshot unless a newer one is cached, and writes it to the channel's subscribers if
   * its figures differ from the ones they have. Returns whether it was written, and the entry now cached.
   */
  function store (negocioId: string, snapshot: Snapshot): { entry: Entry, published: boolean, delivered: number } {
    const channel = channelFor(negocioId)
    const prev = cache.get(negocioId)
    if (prev !== undefined && prev.snapshot.version > snapshot.version) return { entry: prev, published: false, delivered: 0 }
    const same = prev !== undefined && sameFigures(prev.snapshot.stats, snapshot.stats)
    // Same figures: keep the message subscribers have (its timestamp too), only the newer version and day.
    const entry = { snapshot, message: same ? (prev as Entry).message : new Prepared(statsMessage(snapshot.stats)) }
    cache.set(negocioId, entry)
    armMidnight(snapshot.dayEndsAt)
    if (same) return { entry, published: false, delivered: 0 }
    return { entry, published: true, delivered: hub.publish(channel, entry.message) }
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
    let published = false
    let message: Prepared | undefined
    if (hub.subscriberCount(channel) > 0) {
      const stored = store(negocioId, snapshot)
      ;({ delivered, published } = stored)
      message = stored.entry.message
    }
    const bus = options.broadcast ? await publish(snapshot) : 'none'
    return { stats: snapshot.stats, delivered, message, published, broadcast: options.broadcast, bus, snapshot }
  }

  /** Tells the other instances a snapshot; never rejects. */
  async function publish (snapshot: Snapshot): Promise<BusOutcome> {
    if (opts.broadcast === undefined) return 'none'
    try {
      await opts.broadcast({ origin, snapshot })
      return 'sent'
    } catch (err) {
      onError(err, 'bus publish failed')
      return 'unreachable'
    }
  }

  /** Recomputes a negocio with a run that starts after this call; resolves once it was pushed. */
  function refresh (negocioId: string, options: RefreshOptions): Promise<RefreshResult> {
    return coalescer.request(negocioId, options)
  }

  /** The cached stats message of a negocio, if it is still of today. */
  function cached (negocioId: string): Prepared | undefined {
    const entry = cache.get(negocioId)
    if (entry === undefined || entry.snapshot.dayEndsAt <= stats.now().getTime()) return undefined
    return entry.message
  }

  /**
   * Makes sure the subscribers of a negocio receive its stats: a run already in flight will push
   * them (its result reaches everyone subscribed when it ends), so a new subscriber joins it
   * rather than queueing another; 5,000 subscribes to one cold channel cost one query. A run that
   * found the figures unchanged writes nothing: `published` false, the subscriber needs `message`.
   */
  function load (negocioId: string): Promise<RefreshResult> {
    return coalescer.join(negocioId, { broadcast: false })
  }

  /**
   * Gets a connection that just subscribed to `channel` (a WebSocket subscribe, an SSE stream) its
   * current stats: the cached message, or the result of the run it joins (load). A business that
   * does not exist ends the subscription. A failure is told to `onFailure`, with the code and message
   * for the client, while the connection still follows the channel; unexpected ones go to onError.
   */
  function sendCurrent (conn: Connection, channel: string, onFailure: (code: ErrorCode, message: string) => void): void {
    const negocioId = negocioOf(channel) as string
    const message = cached(negocioId)
    if (message !== undefined) {
      conn.send(message)
      hub.counters.sent++
      return
    }
    load(negocioId).then((result) => {
      if (!result.published && result.message !== undefined && conn.channels.has(channel)) {
        conn.send(result.message)
        hub.counters.sent++
      }
    }, (err: unknown) => {
      if (!conn.channels.has(channel)) return
      if (isNotFound(err)) hub.unsubscribe(conn, channel)
      if (!isAppError(err)) onError(err, `stats for a new subscriber failed (${negocioId})`)
      onFailure(isAppError(err) ? err.code : 'internal', isAppError(err) ? err.message : 'internal error')
    })
  }

  /**
   * POST /notify/cita: the REST API changed a negocio's citas. Resolves with stats from a recompute
   * that started after the call arrived, so they include every change committed before it, whether
   * or not change capture recorded it. With change capture leading here, the change table is drained
   * first and the notify shares the recompute that caused (or the one a captured change of the same
   * commit is waiting to start): one query for a commit both captured and notified. Otherwise a
   * recompute of its own, whose result is broadcast to the other instances before this resolves.
   */
  async function notify (negocioId: string): Promise<RefreshResult> {
    const arrivedAt = Date.now()
    // Capture that cannot drain now (its session is down) leaves the notify to recompute itself.
    const barrier = await opts.barrier?.().catch((err: unknown) => { onError(err, 'change capture could not drain for a notify') })
    if (barrier === undefined || !barrier.drained) return await refresh(negocioId, { broadcast: true })
    const result = await coalescer.joinSince(negocioId, { broadcast: true }, arrivedAt)
    // The change may be one the trigger never saw: the other instances get the figures too.
    const bus = result.broadcast ? result.bus : await publish(result.snapshot)
    return { ...result, bus: bus === 'sent' && !barrier.delivered ? 'unreachable' : bus }
  }

  /** Another instance computed stats after a notify, or heard of changes: deliver them here. */
  function deliver (message: BusMessage): void {
    if (message.origin === origin) return
    if ('changed' in message) {
      changed(message.changed)
      return
    }
    const negocioId = message.snapshot.stats.negocio_id
    if (hub.subscriberCount(channelFor(negocioId)) === 0) return
    store(negocioId, message.snapshot)
  }

  function background (negocioId: string, context: string, delayMs = 0): void {
    coalescer.requestAfter(negocioId, { broadcast: false }, delayMs).catch((err: unknown) => {
      if (!isNotFound(err)) onError(err, `${context} (${negocioId})`)
    })
  }

  /**
   * Rows of citas changed in the database (change capture); '*' means any may have. A negocio with
   * subscribers here is recomputed `captureGraceMs` later: the REST API's notify for the same commit,
   * arriving meanwhile, shares that query instead of running a second one.
   */
  function changed (negocioIds: Iterable<string>): void {
    for (const negocioId of negocioIds) {
      if (negocioId === '*') {
        starResync()
        continue
      }
      if (hub.subscriberCount(channelFor(negocioId)) > 0) background(negocioId, 'change capture recompute failed', captureGraceMs)
    }
  }

  /** Capture's '*': a resync now, or, within resyncIntervalMs of the last one, one when the interval ends. */
  function starResync (): void {
    if (closed || starTimer !== undefined) return
    const wait = starResyncAt + resyncIntervalMs - Date.now()
    const go = (): void => {
      starTimer = undefined
      starResyncAt = Date.now()
      starResyncs++
      resyncAll().catch(() => {})
    }
    if (wait <= 0) {
      go()
      return
    }
    starTimer = setTimeout(go, wait)
    starTimer.unref()
  }

  /**
   * Recomputes every channel with local subscribers (after a bus reconnect, an outage, a new capture
   * leader, or periodically), `resyncConcurrency` at a time, pushing where the figures changed.
   */
  function resyncAll (): Promise<void> {
    const startedAt = Date.now()
    const negocios: string[] = []
    for (const channel of hub.channelNames()) {
      const negocioId = negocioOf(channel)
      if (negocioId === null) continue
      negocios.push(negocioId)
    }
    let failed = 0
    const done = forEachLimited(negocios, opts.resyncConcurrency ?? 4, async (negocioId) => {
      await refresh(negocioId, { broadcast: false })
    }, (err, negocioId) => {
      if (isNotFound(err)) return
      failed++
      onError(err, `resync failed (${negocioId})`)
    }).then(() => {
      if (lastResync?.done === done) lastResync.ok = failed === 0
    })
    lastResync = { startedAt, done, ok: false }
    return done
  }

  /**
   * One recovery path: after an outage that began at `since`, recomputes every channel unless a
   * resync that started since then already did (or is doing) it, so the database monitor and a
   * reconnect that saw the same outage cost one resync, not two.
   */
  async function resyncSince (since: number): Promise<boolean> {
    const last = lastResync
    if (last !== undefined && last.startedAt >= since) {
      await last.done
      if (last.ok) return false
    }
    await resyncAll()
    return true
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
      if (entry.snapshot.dayEndsAt <= nowMs) background(negocioId, 'midnight recompute failed')
      else next = Math.min(next, entry.snapshot.dayEndsAt)
    }
    if (next !== Number.POSITIVE_INFINITY) armMidnight(next)
  }

  function close (): void {
    closed = true
    if (midnightTimer !== undefined) clearTimeout(midnightTimer)
    if (starTimer !== undefined) clearTimeout(starTimer)
  }

  return {
    refresh,
    load,
    sendCurrent,
    notify,
    cached,
    deliver,
    changed,
    resyncAll,
    resyncSince,
    close,
    /** Negocios with a cached snapshot. */
    get cacheSize () { return cache.size },
    /** Recompute runs started (each is one stats query). */
    get runs () { return coalescer.runs },
    /** Resyncs of every shown channel that change capture's '*' started. */
    get starResyncs () { return starResyncs },
    /** Times the day-boundary timer fired (whether or not a day had ended). */
    get midnightChecks () { return midnightChecks },
    /** Callers (notifies, subscribes) waiting for a recompute. */
    get waiting () { return coalescer.waiting }
  }
}

export type LiveStats = ReturnType<typeof createLiveStats>
