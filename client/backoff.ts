/** Reconnect delays. Full jitter spreads clients that lost the server together over the whole window. */
export interface BackoffOptions {
  /** Ceiling of the first delay, in ms. Default 500. */
  initial?: number
  /** Largest ceiling, in ms. Default 30 000. */
  max?: number
  /** Growth of the ceiling per failed attempt. Default 2. */
  factor?: number
  /** After a close with 1012 (server restarting) the delay is drawn from [0, restartWindow) ms. Default 5 000. */
  restartWindow?: number
}

export const BACKOFF_DEFAULTS: Required<BackoffOptions> = { initial: 500, max: 30_000, factor: 2, restartWindow: 5_000 }

/** The ceiling for a given attempt (0-based): min(max, initial * factor^attempt). */
export function backoffCeiling (attempt: number, opts: BackoffOptions = {}): number {
  const { initial, max, factor } = { ...BACKOFF_DEFAULTS, ...opts }
  return Math.min(max, initial * factor ** Math.max(0, attempt))
}

/** "Full jitter": a uniform delay in [0, ceiling) for the given attempt, in whole ms. */
export function backoffDelay (attempt: number, opts: BackoffOptions = {}, random: () => number = Math.random): number {
  return Math.floor(random() * backoffCeiling(attempt, opts))
}

/** The delay after a close with 1012: uniform in [0, restartWindow), so a restart does not bring every client back at once. */
export function restartDelay (opts: BackoffOptions = {}, random: () => number = Math.random): number {
  return Math.floor(random() * (opts.restartWindow ?? BACKOFF_DEFAULTS.restartWindow))
}
