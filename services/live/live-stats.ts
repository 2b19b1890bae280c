import { createCoalescer } from './coalescer.js'
import { Prepared, type Connection, type Hub } from './hub.js'
import { channelFor, goneMessage, negocioOf, statsMessage } from './messages.js'
import { isAppError, type ErrorCode } from '../http/errors.js'
import { MAX_CHANGED_IDS, MAX_SNAPSHOTS, type BusMessage } from '../bus/codec.js'
import { forEachLimited } from './db-monitor.js'
import { MAX_BATCH, type Snapshot, type Stats, type StatsService } from './stats.js'

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
  /** Whether this instance drains the change table: it then computes for every instance, and answers their notifies. */
  leads?: () => boolean
  /** Drains the change table first, so a commit both captured and notified costs one query. */
  barrier?: () => Promise<CaptureBarrier>
  /** Least gap between two recomputes of one negocio that changes again within it, in ms. Default 0. */
  coalesceMs?: number
  resyncConcurrency?: number
  /** A follower's notify computes here when the leader has not answered within this, in ms. Default 1000. */
  forwardTimeoutMs?: number
  /** For errors nobody awaits (background recomputes, bus publishes). */
  onError?: (err: unknown, context: string) => void
}

interface Entry {
  snapshot: Snapshot
  message: Prepared
  /** Sockets this snapshot was written to (0 when its figures were already there). */
  pushedTo: number
}

const sameFigures = (a: Stats, b: Stats): boolean =>
  a.citas_hoy === b.citas_hoy && a.total_citas === b.total_citas &&
  a.citas_completadas === b.citas_completadas && a.citas_canceladas === b.citas_canceladas

const MAX_TIMER_MS = 2 ** 31 - 1
/** Change capture's '*' starts a resync at most this often; one that comes sooner waits. */
const STAR_RESYNC_INTERVAL_MS = 5000
/** Every instance tells the negocios it shows this often; the others forget them after three times as long. */
export const INTEREST_REFRESH_MS = 10_000
/** One negocio's recomputes take at most this share of the time, however fast its citas change. */
const MAX_BUSY_SHARE = 0.25

const isNotFound = (err: unknown): boolean => isAppError(err) && err.code === 'not_found'

/** Every watched channel's stats, fresh and cheap; subscribers never get the same figures twice in a row. */
export function createLiveStats (opts: LiveStatsOptions) {
  const { stats, hub, origin } = opts
  const onError = opts.onError ?? (() => {})
  const cache = new Map<string, Entry>()
  const coalescer = createCoalescer<string, RefreshOptions, RefreshResult>(run, {
    gapMs: opts.coalesceMs ?? 0,
    maxBusyShare: MAX_BUSY_SHARE,
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
  /** Negocios other instances show, until when (ms). */
  const remote = new Map<string, number>()
  const announcing = new Set<string>()
  const outgoing: Array<{ snapshot: Snapshot, sent: (outcome: BusOutcome) => void }> = []
  const forwarded = new Map<number, (snapshot: Snapshot | undefined) => void>()
  let refs = 0
  let forwards = 0
  const interestTimer = opts.broadcast === undefined
    ? undefined
    : setInterval(() => {
      const at = Date.now()
      for (const [id, until] of remote) if (until <= at) remote.delete(id)
      announce([...hub.channelNames()].map(negocioOf).filter((id): id is string => id !== null))
    }, INTEREST_REFRESH_MS).unref()

  const shown = (negocioId: string): boolean => hub.subscriberCount(channelFor(negocioId)) > 0
  /** Whether any instance shows the negocio, as far as this one knows. */
  const watched = (negocioId: string): boolean => shown(negocioId) || (remote.get(negocioId) ?? 0) > Date.now()

  /** Tells the other instances these negocios are shown here (batched per turn of the event loop). */
  function announce (ids: readonly string[]): void {
    if (opts.broadcast === undefined || ids.length === 0) return
    if (announcing.size === 0) {
      setImmediate(() => {
        const all = [...announcing]
        announcing.clear()
        for (let i = 0; i < all.length; i += MAX_CHANGED_IDS) {
          opts.broadcast?.({ origin, interest: all.slice(i, i + MAX_CHANGED_IDS) }).catch((err: unknown) => { onError(err, 'bus publish failed') })
        }
      })
    }
    for (const id of ids) announcing.add(id)
  }

  hub.onEmpty((channel) => {
    const negocioId = negocioOf(channel)
    if (negocioId !== null) cache.delete(negocioId)
  })

  /** Caches a snapshot unless a newer one is cached; writes it to the subscribers if its figures differ. */
  function store (negocioId: string, snapshot: Snapshot): { entry: Entry, published: boolean, delivered: number } {
    const channel = channelFor(negocioId)
    const prev = cache.get(negocioId)
    // An equal version is the same computation, heard twice (its figures, then a notify's answer).
    if (prev !== undefined && prev.snapshot.version >= snapshot.version) return { entry: prev, published: false, delivered: 0 }
    const same = prev !== undefined && sameFigures(prev.snapshot.stats, snapshot.stats)
    // Same figures: keep the message subscribers have (its timestamp too).
    const entry: Entry = { snapshot, message: same ? (prev as Entry).message : new Prepared(statsMessage(snapshot.stats)), pushedTo: 0 }
    cache.set(negocioId, entry)
    armMidnight(snapshot.dayEndsAt)
    if (same) return { entry, published: false, delivered: 0 }
    entry.pushedTo = hub.publish(channel, entry.message)
    return { entry, published: true, delivered: entry.pushedTo }
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

  /** Tells the other instances a snapshot, with the others of this turn of the event loop; never rejects. */
  function publish (snapshot: Snapshot): Promise<BusOutcome> {
    const broadcast = opts.broadcast
    if (broadcast === undefined) return Promise.resolve('none')
    return new Promise((resolve) => {
      if (outgoing.length === 0) {
        setImmediate(() => {
          while (outgoing.length > 0) {
            const part = outgoing.splice(0, MAX_SNAPSHOTS)
            broadcast({ origin, snapshots: part.map(p => p.snapshot) }).then(() => {
              for (const p of part) p.sent('sent')
            }, (err: unknown) => {
              onError(err, 'bus publish failed')
              for (const p of part) p.sent('unreachable')
            })
          }
        })
      }
      outgoing.push({ snapshot, sent: resolve })
    })
  }

  /** Sends a new subscriber its channel's stats; `onFailure` gets the client's error while it still follows the channel. */
  function sendCurrent (conn: Connection, channel: string, onFailure: (code: ErrorCode, message: string) => void): void {
    const negocioId = negocioOf(channel) as string
    if (hub.subscriberCount(channel) === 1) announce([negocioId])
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

  /** Stats from a recompute started after the call; the leader drains capture first, so a captured and notified commit costs one query. */
  // A follower hands its notify to the leader, and computes it itself only when no answer comes.
  async function notify (negocioId: string): Promise<RefreshResult> {
    if (opts.leads !== undefined && !opts.leads() && opts.broadcast !== undefined) {
      const snapshot = await forward(negocioId, opts.broadcast)
      if (snapshot !== undefined) {
        forwards++
        const stored = shown(negocioId) ? store(negocioId, snapshot) : undefined
        // Its figures may have come first, with the leader's others: what they were written to counts.
        const delivered = stored?.entry.snapshot.version === snapshot.version ? stored.entry.pushedTo : 0
        return { stats: snapshot.stats, delivered, message: stored?.entry.message, published: delivered > 0, broadcast: true, bus: 'sent', snapshot }
      }
      return await coalescer.request(negocioId, { broadcast: true })
    }
    const arrivedAt = Date.now()
    // Capture that cannot drain now (its session is down) leaves the notify to recompute itself.
    const barrier = await opts.barrier?.().catch((err: unknown) => { onError(err, 'change capture could not drain for a notify') })
    if (barrier === undefined || !barrier.drained) return await coalescer.request(negocioId, { broadcast: true })
    const result = await coalescer.joinSince(negocioId, { broadcast: true }, arrivedAt)
    // The change may be one the trigger never saw: the other instances get the figures too.
    const bus = result.broadcast ? result.bus : await publish(result.snapshot)
    return { ...result, bus: bus === 'sent' && !barrier.delivered ? 'unreachable' : bus }
  }

  /** Asks the leader to compute a notified negocio; undefined when it did not answer in time, or failed. */
  function forward (negocioId: string, broadcast: (message: BusMessage) => Promise<void>): Promise<Snapshot | undefined> {
    const ref = ++refs
    return new Promise((resolve) => {
      const settle = (snapshot: Snapshot | undefined): void => {
        clearTimeout(timer)
        forwarded.delete(ref)
        resolve(snapshot)
      }
      const timer = setTimeout(() => { settle(undefined) }, opts.forwardTimeoutMs ?? 1000)
      forwarded.set(ref, settle)
      broadcast({ origin, notify: negocioId, ref }).catch(() => { settle(undefined) })
    })
  }

  /** The leader's part of a follower's notify. */
  function answer (to: string, ref: number, negocioId: string): void {
    const send = (snapshot?: Snapshot): void => {
      opts.broadcast?.({ origin, answer: { to, ref }, ...(snapshot !== undefined ? { snapshot } : {}) }).catch((err: unknown) => { onError(err, 'bus publish failed') })
    }
    notify(negocioId).then((result) => { send(result.snapshot) }, () => { send() })
  }

  function deliver (message: BusMessage): void {
    if (message.origin === origin) return
    if ('snapshots' in message) {
      for (const snapshot of message.snapshots) if (shown(snapshot.stats.negocio_id)) store(snapshot.stats.negocio_id, snapshot)
    } else if ('changed' in message) {
      // Nobody was known to show these: the ones shown here are recomputed here, and announced.
      const mine = message.changed.filter(id => id === '*' || shown(id))
      for (const id of mine) {
        if (id === '*') starResync()
        else background(id, 'change capture recompute failed')
      }
      announce(mine.filter(id => id !== '*'))
    } else if ('interest' in message) {
      const until = Date.now() + 3 * INTEREST_REFRESH_MS
      for (const id of message.interest) remote.set(id, until)
    } else if ('notify' in message) {
      if (opts.leads?.() === true) answer(message.origin, message.ref, message.notify)
    } else if (message.answer.to === origin) {
      forwarded.get(message.answer.ref)?.(message.snapshot)
    }
  }

  function background (negocioId: string, context: string, broadcast = false): void {
    coalescer.request(negocioId, { broadcast }).catch((err: unknown) => {
      if (!isNotFound(err)) onError(err, `${context} (${negocioId})`)
    })
  }

  /** The leader's drained ids: watched ones computed here (one statement) and published, the rest sent as ids; rejects if they were not. */
  async function captured (negocioIds: readonly string[]): Promise<void> {
    const others: string[] = []
    for (const negocioId of negocioIds) {
      if (negocioId === '*') starResync()
      if (negocioId !== '*' && watched(negocioId)) background(negocioId, 'change capture recompute failed', true)
      else others.push(negocioId)
    }
    for (let i = 0; i < others.length && opts.broadcast !== undefined; i += MAX_CHANGED_IDS) {
      await opts.broadcast({ origin, changed: others.slice(i, i + MAX_CHANGED_IDS) })
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
    if (wait > 0) starTimer = setTimeout(go, wait).unref()
    else go()
  }

  function resyncAll (): Promise<void> {
    const startedAt = Date.now()
    const negocios = [...hub.channelNames()].map(negocioOf).filter((id): id is string => id !== null)
    let failed = 0
    // Requests made together share a statement: resyncConcurrency statements at a time.
    const done = forEachLimited(negocios, (opts.resyncConcurrency ?? 4) * MAX_BATCH, async (negocioId) => {
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
    clearTimeout(midnightTimer)
    midnightAt = at
    const delay = Math.min(Math.max(at - stats.now().getTime(), 0), MAX_TIMER_MS)
    midnightTimer = setTimeout(onMidnight, delay).unref()
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
    clearTimeout(midnightTimer)
    clearTimeout(starTimer)
    clearInterval(interestTimer)
    for (const settle of forwarded.values()) settle(undefined)
  }

  return {
    sendCurrent, notify, deliver, captured, resyncAll, resyncSince, close,
    get cacheSize () { return cache.size },
    /** Recompute runs started (each is one stats query). */
    get runs () { return coalescer.runs },
    get starResyncs () { return starResyncs },
    /** Times the day-boundary timer fired (whether or not a day had ended). */
    get midnightChecks () { return midnightChecks },
    /** Notifies another instance (the capture leader) computed for this one. */
    get forwards () { return forwards },
    get waiting () { return coalescer.waiting }
  }
}
