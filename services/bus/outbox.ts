import type { BusMessage } from '../live/live-stats.js'

type SnapshotMessage = Extract<BusMessage, { snapshot: unknown }>

/** A notify's stats must reach the other instances even if the bus was down: the newest per negocio waits here. */
export function createBusOutbox (send: (message: BusMessage) => Promise<void>, opts: { retryMs?: number, onError?: (err: unknown) => void } = {}) {
  const retryMs = opts.retryMs ?? 1000
  const kept = new Map<string, SnapshotMessage>()
  let timer: NodeJS.Timeout | undefined
  let closed = false

  function keep (message: SnapshotMessage): void {
    const id = message.snapshot.stats.negocio_id
    const prev = kept.get(id)
    if (prev === undefined || prev.snapshot.version <= message.snapshot.version) kept.set(id, message)
    if (closed || timer !== undefined) return
    timer = setTimeout(() => {
      timer = undefined
      flush().catch(() => {})
    }, retryMs).unref()
  }

  /** Sends what is kept: when the bus is back, and every `retryMs` while something is kept. */
  async function flush (): Promise<void> {
    const batch = [...kept.values()]
    kept.clear()
    for (const message of batch) {
      try {
        await send(message)
      } catch (err) {
        keep(message)
        opts.onError?.(err)
      }
    }
  }

  return {
    /** Rejects when the send fails; a snapshot is then kept and sent again later. */
    async publish (message: BusMessage): Promise<void> {
      try {
        await send(message)
      } catch (err) {
        if ('snapshot' in message) keep(message)
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
