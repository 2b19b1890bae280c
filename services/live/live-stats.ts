import { createCoalescer } from './coalescer.js'
import { Prepared, type Connection, type Hub } from './hub.js'
import { channelFor, goneMessage, negocioOf, statsMessage } from './messages.js'
import { isAppError, type ErrorCode } from '../http/errors.js'
import { forEachLimited } from './db-monitor.js'
import type { Snapshot, Stats, StatsService } from './stats.js'

/** What one instance tells the others: stats it computed for a notify, or changed negocio ids ('*' = any). */
export type BusMessage = { origin: string, snapshot: Snapshot } | { origin: string, changed: string[] }

/** `none`: there are no other instances (memory bus). */
export type BusOutcome = 'sent' | 'unreachable' | 'none'

export interface RefreshOptions {
  /** Publish the result on the bus (only for notifies this instance received). */
  broadcast: boolean
}

export interface RefreshResult {
  stats: Stats
  delivered: number
  /** The message the channel's subscribers have now; undefined when it has none. */
  message: Prepared | undefined
  /** Whether the run wrote to the subscribers (only when the figures changed). */
  published: boolean
  broadcast: boolean
  bus: BusOutcome
  snapshot: Snapshot
}

/** Change capture after reading every change committed before it was asked. */
export interface CaptureBarrier {
  /** False when this instance is not the leader: the caller recomputes. */
  drained: boolean
  /** Whether the drained changes reached the other instances. */
  delivered: boolean
}

export interface LiveStatsOptions {
  stats: StatsService
  hub: Hub
  /** This instance's id on the bus: messages with it are its own echo. */
  origin: string
  /** Absent for a single process. */
  broadcast?: (message: BusMessage) => Promise<void>
  /** Drains the change table first, so a commit both captured and notified costs one query. */
  barrier?: () => Promise<CaptureBarrier>
  /** Least gap between two recomputes of one negocio, in ms. Default 100. */
  coalesceMs?: number
  resyncConcurrency?: number
  /** A captured change is recomputed this much later (ms), for the same commit's notify to share it. Default 0. */
  captureGraceMs?: number
  /** For errors nobody awaits (background recomputes, bus publishes). */
  onError?: (err: unknown, context: string) => void
}

interface Entry {
  snapshot: Snapshot
  message: Prepared
}

const sameFigures = (a: Stats, b: Stats): boolean =>
  a.citas_hoy === b.citas_hoy && a.total_citas === b.total_citas &&
  a.citas_completadas === b.citas_completadas && a.citas_canceladas === b.citas_canceladas

const MAX_TIMER_MS = 2 ** 31 - 1
/** Change capture's '*' starts a resync at most this often; one that comes sooner waits. */
const STAR_RESYNC_INTERVAL_MS = 5000

const isNotFound = (err: unknown): boolean => isAppError(err) && err.code === 'not_found'

/** Every watched channel's stats, fresh and cheap; subscribers never get the same figures twice in a row. */
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
  let lastResync: { startedAt: number, done: Promise<void>, ok: boolean } | undefined
  let starResyncAt = Number.NEGATIVE_INFINITY
  let starTimer: NodeJS.Timeout | undefined
  let starResyncs = 0

  hub.onEmpty((channel) => {
    const negocioId = negocioOf(channel)
    if (negocioId !== null) cache.delete(negocioId)
  })

  /** Caches a snapshot unless a newer one is cached; writes it to the subscribers if its figures differ. */
  function store (negocioId: string, snapshot: Snapshot): { entry: Entry, published: boolean, delivered: number } {
    const channel = channelFor(negocioId)
    const prev = cache.get(negocioId)
    if (prev !== undefined && prev.snapshot.version > snapshot.version) return { entry: prev, published: false, delivered: 0 }
    const same = prev !== undefined && sameFigures(prev.snapshot.stats, snapshot.stats)
    // Same figures: keep the message subscribers have (its timestamp too).
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
      // A deleted negocio: its subscribers are told and dropped rather than kept on stale figures.
      if (isNotFound(err) && cache.delete(negocioId)) hub.dropChannel(channel, goneMessage(channel))
      throw err
    }
    const stored = hub.subscriberCount(channel) > 0 ? store(negocioId, snapshot) : undefined
    const bus = options.broadcast ? await publish(snapshot) : 'none'
    const { delivered = 0, published = false } = stored ?? {}
    return { stats: snapshot.stats, delivered, message: stored?.entry.message, published, broadcast: options.broadcast, bus, snapshot }
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

  /** Sends a new subscriber its channel's stats; `onFailure` gets the client's error while it still follows the channel. */
  function sendCurrent (conn: Connection, channel: string, onFailure: (code: ErrorCode, message: string) => void): void {
    const negocioId = negocioOf(channel) as string
    const entry = cache.get(negocioId)
    if (entry !== undefined && entry.snapshot.dayEndsAt > stats.now().getTime()) {
      conn.send(entry.message)
      hub.counters.sent++
      return
    }
    // Join the run in flight (5,000 cold subscribes cost one query); one that found the figures unchanged wrote nothing.
    coalescer.join(negocioId, { broadcast: false }).then((result) => {
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

  // Stats from a recompute started after the call arrived. Leading capture drains first and the notify shares
  // the recompute that caused, so a captured and notified commit costs one query.
  async function notify (negocioId: string): Promise<RefreshResult> {
    const arrivedAt = Date.now()
    // Capture that cannot drain now (its session is down) leaves the notify to recompute itself.
    const barrier = await opts.barrier?.().catch((err: unknown) => { onError(err, 'change capture could not drain for a notify') })
    if (barrier === undefined || !barrier.drained) return await coalescer.request(negocioId, { broadcast: true })
    const result = await coalescer.joinSince(negocioId, { broadcast: true }, arrivedAt)
    // The change may be one the trigger never saw: the other instances get the figures too.
    const bus = result.broadcast ? result.bus : await publish(result.snapshot)
    return { ...result, bus: bus === 'sent' && !barrier.delivered ? 'unreachable' : bus }
  }

  function deliver (message: BusMessage): void {
    if (message.origin === origin) return
    if ('changed' in message) changed(message.changed)
    else if (hub.subscriberCount(channelFor(message.snapshot.stats.negocio_id)) > 0) store(message.snapshot.stats.negocio_id, message.snapshot)
  }

  function background (negocioId: string, context: string, delayMs = 0): void {
    coalescer.requestAfter(negocioId, { broadcast: false }, delayMs).catch((err: unknown) => {
      if (!isNotFound(err)) onError(err, `${context} (${negocioId})`)
    })
  }

  /** Negocios change capture saw change ('*': any), recomputed `captureGraceMs` later for the commit's notify to share. */
  function changed (negocioIds: Iterable<string>): void {
    for (const negocioId of negocioIds) {
      if (negocioId === '*') starResync()
      else if (hub.subscriberCount(channelFor(negocioId)) > 0) background(negocioId, 'change capture recompute failed', captureGraceMs)
    }
  }

  function starResync (): void {
    if (closed || starTimer !== undefined) return
    const wait = starResyncAt + STAR_RESYNC_INTERVAL_MS - Date.now()
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

  function resyncAll (): Promise<void> {
    const startedAt = Date.now()
    const negocios = [...hub.channelNames()].map(negocioOf).filter((id): id is string => id !== null)
    let failed = 0
    const done = forEachLimited(negocios, opts.resyncConcurrency ?? 4, async (negocioId) => {
      await coalescer.request(negocioId, { broadcast: false })
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

  /** Resyncs unless one started since `since` did it: the db monitor and a reconnect share one per outage. */
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
    sendCurrent, notify, deliver, changed, resyncAll, resyncSince, close,
    get cacheSize () { return cache.size },
    /** Recompute runs started (each is one stats query). */
    get runs () { return coalescer.runs },
    get starResyncs () { return starResyncs },
    /** Times the day-boundary timer fired (whether or not a day had ended). */
    get midnightChecks () { return midnightChecks },
    get waiting () { return coalescer.waiting }
  }
}
