import { MAX_SNAPSHOTS, type BusMessage } from './codec.js'
import type { Snapshot } from '../live/stats.js'

/** Computed stats must reach the other instances even if the bus was down: the newest per negocio waits here. */
export function createBusOutbox (send: (message: BusMessage) => Promise<void>, opts: { retryMs?: number, onError?: (err: unknown) => void } = {}) {
  const retryMs = opts.retryMs ?? 1000
  const kept = new Map<string, Snapshot>()
  let origin = ''
  let timer: NodeJS.Timeout | undefined
  let closed = false

  function keep (from: string, snapshots: readonly Snapshot[]): void {
    origin = from
    for (const snapshot of snapshots) {
      const prev = kept.get(snapshot.stats.negocio_id)
      if (prev === undefined || prev.version <= snapshot.version) kept.set(snapshot.stats.negocio_id, snapshot)
    }
    if (closed || timer !== undefined) return
    timer = setTimeout(() => {
      timer = undefined
      flush().catch(() => {})
    }, retryMs).unref()
  }

  /** Sends what is kept: when the bus is back, and every `retryMs` while something is kept. */
  async function flush (): Promise<void> {
    const all = [...kept.values()]
    kept.clear()
    for (let i = 0; i < all.length; i += MAX_SNAPSHOTS) {
      const snapshots = all.slice(i, i + MAX_SNAPSHOTS)
      try {
        await send({ origin, snapshots })
      } catch (err) {
        keep(origin, snapshots)
        opts.onError?.(err)
      }
    }
  }

  return {
    /** Rejects when the send fails; snapshots are then kept and sent again later. */
    async publish (message: BusMessage): Promise<void> {
      try {
        await send(message)
      } catch (err) {
        if ('snapshots' in message) keep(message.origin, message.snapshots)
        throw err
      }
    },
    flush,
    get pending () { return kept.size },
    close (): void {
      closed = true
      clearTimeout(timer)
    }
  }
}
