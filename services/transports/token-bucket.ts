/**
 * A token bucket for one connection's messages: `rate` tokens a second, at most `burst` saved up.
 * Refilled lazily on each take, so it needs no timer. Its state is three numbers the owner keeps in
 * its own fields (a WebSocket connection holds them itself): no object per bucket.
 */
export interface BucketState {
  /** Tokens saved up (fractional between refills). */
  tokens: number
  /** When the bucket was last refilled (ms). */
  last: number
  /** Messages refused since the last one that was allowed. */
  refused: number
}

/** A full bucket's state. */
export function fullBucket (burst: number, at: number): BucketState {
  return { tokens: burst, last: at, refused: 0 }
}

/** Takes one token at time `at` (ms); false when the bucket is empty (the message is over the rate). */
export function takeToken (state: BucketState, rate: number, burst: number, at: number): boolean {
  state.tokens = Math.min(burst, state.tokens + ((at - state.last) / 1000) * rate)
  state.last = at
  if (state.tokens >= 1) {
    state.tokens -= 1
    state.refused = 0
    return true
  }
  state.refused++
  return false
}
