import type { BusMessage } from '../live/live-stats.js'

type SnapshotMessage = Extract<BusMessage, { snapshot: unknown }>

export interface BusOutbox {
  /** Sends a message; a snapshot that could not be sent is kept (the newest per negocio) and sent again later. Rejects on failure. */
  publish: (message: BusMessage) => Promise<void>
  /** Sends what is kept; called when the bus is back, and every `retryMs` while something is kept. */
  flush: () => Promise<void>
  readonly pending: number
  close: () => void
}

/**
 * What a notify computed must reach the other instances even if the bus was down at that moment:
 * the last snapshot per negocio waits here and goes out when the bus is back. (Changes drained by
 * change capture are kept by the capture itself, and a restarted bus makes every instance resync.)
 */
export function createBusOutbox (send: (message: BusMessage) => Promise<void>, opts: { retryMs?: number, onError?: (err: unknown) => void } = {}): BusOutbox {
  const retryMs = opts.retryMs ?? 1000
  const kept = new Map<string, SnapshotMessage>()
  let timer: NodeJS.Timeout | undefined
  let closed = false

  function keep (message: SnapshotMessage): void {
    const id = message.snapshot.stats.negocio_id
    const prev = kept.get(id)
    if (prev === undefined || prev.snapshot.version <= message.snapshot.version) kept.set(id, message)
    arm()
  }

  function arm (): void {
    if (closed || timer !== undefined) return
    timer = setTimeout(() => {
      timer = undefined
      flush().catch(() => {})
    }, retryMs)
    timer.unref()
  }

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
    async publish (message) {
      try {
        await send(message)
      } catch (err) {
        if ('snapshot' in message) keep(message)
        throw err
      }
    },
    flush,
    get pending () { return kept.size },
    close () {
      closed = true
      if (timer !== undefined) clearTimeout(timer)
    }
  }
}
