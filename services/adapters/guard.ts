/**
 * What the adapters in this folder share. An adapter is the one place that touches an internal
 * of a dependency (a private field, an undocumented method or property), kept because a benchmark
 * run pays for it or because nothing public offers the behaviour. Each one checks the shape it
 * relies on before using it (at boot or on first use) and, when the shape is not the one it
 * knows, takes the dependency's public API instead and says so once in the log.
 */

/** The part of a pino/Fastify logger the adapters use. */
export interface AdapterLog {
  warn: (obj: object, msg: string) => void
}

export type AdapterName = 'ws-send' | 'upgrade-release' | 'ws-server-options' | 'pg-pool-settings'

export const ADAPTERS: readonly AdapterName[] = ['ws-send', 'upgrade-release', 'ws-server-options', 'pg-pool-settings']

export interface Guard {
  readonly name: AdapterName
  /**
   * True when the adapter must take its public path: a shape check failed (see fallback) or
   * forcePublic named it.
   */
  readonly public: boolean
  /**
   * Records that the shape is not the known one; the caller takes the public path. Logged once
   * per process (the first time a logger is at hand), however many sockets or registrations
   * meet the same shape.
   */
  fallback: (reason: string, log?: AdapterLog) => void
}

const forced = new Set<AdapterName>()
/** Every guard made, to force or reset it. */
const guards: Array<{ name: AdapterName, force: () => void, reset: () => void }> = []

/**
 * The guard of one adapter; `consequence` says what the public path costs. `onReset`: what else
 * of the adapter resetGuards forgets (a shape it found good).
 */
export function guard (name: AdapterName, consequence: string, onReset?: () => void): Guard {
  // Read on every delivery: a plain boolean, set by fallback and forcePublic.
  let isPublic = forced.has(name)
  let logged = false
  let reason = ''
  guards.push({
    name,
    force: () => { isPublic = true },
    reset: () => { isPublic = false; logged = false; reason = ''; onReset?.() }
  })
  return {
    name,
    get public () { return isPublic },
    fallback (why: string, log?: AdapterLog) {
      isPublic = true
      if (reason === '') reason = why
      if (logged || log === undefined) return
      logged = true
      log.warn({ adapter: name, reason }, `${name}: a dependency is not the version citas-live knows (${reason}); using its public API instead: ${consequence}`)
    }
  }
}

/**
 * Makes the named adapters (all by default) take their public path from now on, as if the
 * internals had changed shape. For the benchmark, which prices each internal against its public
 * path, and for tests; the server never calls it.
 */
export function forcePublic (names: readonly AdapterName[] = ADAPTERS): void {
  for (const name of names) {
    if (!ADAPTERS.includes(name)) throw new Error(`unknown adapter ${name}: one of ${ADAPTERS.join(', ')}`)
    forced.add(name)
    for (const g of guards) if (g.name === name) g.force()
  }
}

/** Forgets forced paths and recorded fallbacks (tests). */
export function resetGuards (): void {
  forced.clear()
  for (const g of guards) g.reset()
}
