/** Refilled lazily on each take (no timer); the owner (a WsConnection) holds the fields: no object per bucket. */
export interface BucketState {
  tokens: number
  /** When last refilled (ms). */
  last: number
  /** Messages refused since the last one allowed. */
  refused: number
}

export function fullBucket (burst: number, at: number): BucketState {
  return { tokens: burst, last: at, refused: 0 }
}

/** Takes one token at `at` (ms); false when the message is over the rate. */
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
