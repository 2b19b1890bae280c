/**
 * A token bucket for one connection's messages: `rate` tokens a second, at most `burst` saved up.
 * Refilled lazily on each take(), so it needs no timer. A class, not closures: one is made per
 * connection, so its methods live once on the prototype.
 */
export class TokenBucket {
  private tokens: number
  private last: number
  private refused = 0

  constructor (private readonly rate: number, private readonly burst: number, private readonly now: () => number = Date.now) {
    this.tokens = burst
    this.last = now()
  }

  /** Takes one token; false when the bucket is empty (the message is over the rate). */
  take (): boolean {
    const at = this.now()
    this.tokens = Math.min(this.burst, this.tokens + ((at - this.last) / 1000) * this.rate)
    this.last = at
    if (this.tokens >= 1) {
      this.tokens -= 1
      this.refused = 0
      return true
    }
    this.refused++
    return false
  }

  /** Messages refused since the last one that was allowed. */
  get refusedInARow (): number { return this.refused }
}

export function createTokenBucket (rate: number, burst: number, now: () => number = Date.now): TokenBucket {
  return new TokenBucket(rate, burst, now)
}
