/**
 * A token bucket for one connection's messages: `rate` tokens a second, at most `burst` saved up.
 * Refilled lazily on each take(), so it needs no timer.
 */
export interface TokenBucket {
  /** Takes one token; false when the bucket is empty (the message is over the rate). */
  take: () => boolean
  /** Messages refused since the last one that was allowed. */
  readonly refusedInARow: number
}

export function createTokenBucket (rate: number, burst: number, now: () => number = Date.now): TokenBucket {
  let tokens = burst
  let last = now()
  let refused = 0
  return {
    take () {
      const at = now()
      tokens = Math.min(burst, tokens + ((at - last) / 1000) * rate)
      last = at
      if (tokens >= 1) {
        tokens -= 1
        refused = 0
        return true
      }
      refused++
      return false
    },
    get refusedInARow () { return refused }
  }
}
