/**
 * How long the database session and the Redis bus wait before their next attempt to reconnect:
 * full jitter under a ceiling that doubles from RECONNECT_MIN_MS up to RECONNECT_MAX_MS. The
 * ceiling stays low on purpose: while an instance is off the bus, other instances' figures and
 * captured changes do not reach it, so a server back after a long outage must not wait many
 * seconds for the next attempt. One attempt per second per instance costs a server nothing.
 */
export const RECONNECT_MIN_MS = 100
export const RECONNECT_MAX_MS = 1000

/** The wait before attempt `attempt` (0 = the first after a loss), in ms. */
export function reconnectDelay (attempt: number, opts: { minMs?: number, maxMs?: number } = {}, random: () => number = Math.random): number {
  const minMs = opts.minMs ?? RECONNECT_MIN_MS
  const maxMs = Math.max(minMs, opts.maxMs ?? RECONNECT_MAX_MS)
  const ceiling = Math.min(maxMs, minMs * 2 ** Math.min(Math.max(0, attempt), 30))
  return minMs + random() * (ceiling - minMs)
}
