// Full jitter under a doubling ceiling kept low: an instance off the bus misses changes, and one attempt a second costs nothing.
export const RECONNECT_MIN_MS = 100
export const RECONNECT_MAX_MS = 1000

/** The wait before attempt `attempt` (0 = the first after a loss), in ms. */
export function reconnectDelay (attempt: number, opts: { minMs?: number, maxMs?: number } = {}, random: () => number = Math.random): number {
  const minMs = opts.minMs ?? RECONNECT_MIN_MS
  const maxMs = Math.max(minMs, opts.maxMs ?? RECONNECT_MAX_MS)
  const ceiling = Math.min(maxMs, minMs * 2 ** Math.min(Math.max(0, attempt), 30))
  return minMs + random() * (ceiling - minMs)
}
