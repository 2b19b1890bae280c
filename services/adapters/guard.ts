/**
 * An adapter is the one place that touches a dependency's internals, kept because a benchmark pays for
 * it or nothing public does the job. It checks the shape first and, when that is not the known one,
 * takes the public API instead and says so once in the log.
 */

export interface AdapterLog {
  warn: (obj: object, msg: string) => void
}

export const ADAPTERS = ['ws-send', 'upgrade-release', 'ws-server-options', 'pg-pool-settings'] as const
export type AdapterName = typeof ADAPTERS[number]

const forced = new Set<AdapterName>()
const states: Array<{ name: AdapterName, isPublic: boolean, logged: boolean, reason: string }> = []

/** The guard of one adapter; `consequence` says what the public path costs. */
export function guard (name: AdapterName, consequence: string) {
  const state = { name, isPublic: forced.has(name), logged: false, reason: '' }
  states.push(state)
  /** The shape is not the known one: the caller takes the public path. Logged once per process, when a logger is at hand. */
  function fallback (why: string, log?: AdapterLog): void {
    state.isPublic = true
    if (state.reason === '') state.reason = why
    if (state.logged || log === undefined) return
    state.logged = true
    log.warn({ adapter: name, reason: state.reason }, `${name}: a dependency is not the version citas-live knows (${state.reason}); using its public API instead: ${consequence}`)
  }
  return {
    /** A shape check failed, or forcePublic named this adapter. */
    get public () { return state.isPublic },
    fallback,
    /** Whether the public path is taken already (said once, as 'forced' unless a check failed first). */
    onPublicPath (log?: AdapterLog): boolean {
      if (state.isPublic) fallback('forced', log)
      return state.isPublic
    }
  }
}

/** Makes the named adapters (all by default) take their public path, as if their internals had changed: for the benchmark and tests. */
export function forcePublic (names: readonly AdapterName[] = ADAPTERS): void {
  for (const name of names) {
    if (!ADAPTERS.includes(name)) throw new Error(`unknown adapter ${name}: one of ${ADAPTERS.join(', ')}`)
    forced.add(name)
    for (const s of states) if (s.name === name) s.isPublic = true
  }
}

/** Forgets forced paths and recorded fallbacks (tests). */
export function resetGuards (): void {
  forced.clear()
  for (const s of states) Object.assign(s, { isPublic: false, logged: false, reason: '' })
}
