/** Messages between the bench orchestrator and a server under test (Node IPC channel). */
export type Request =
  | { type: 'gauges', id: number }
  | { type: 'gc', id: number }
  | { type: 'heap-snapshot', id: number, path: string }
  | { type: 'stop', id: number }

export interface Gauges {
  /** Stats queries sent to PostgreSQL since the server started. */
  queries: number
  /** Open WebSocket connections. */
  connections: number
}

export type Reply =
  | { type: 'ready', port: number }
  | { type: 'gauges', id: number, gauges: Gauges }
  | { type: 'done', id: number }

/** Answers the orchestrator's requests; `gauges` reads the server's counters, `stop` closes it. */
export function serveIpc (gauges: () => Gauges, stop: () => Promise<void>): void {
  const send = (reply: Reply): void => { process.send?.(reply) }
  process.on('message', (msg: Request) => {
    switch (msg.type) {
      case 'gauges':
        send({ type: 'gauges', id: msg.id, gauges: gauges() })
        return
      case 'gc':
        // Two passes: the first may only finalize what the second frees.
        globalThis.gc?.()
        globalThis.gc?.()
        send({ type: 'done', id: msg.id })
        return
      case 'heap-snapshot':
        import('node:v8').then((v8) => {
          v8.writeHeapSnapshot(msg.path)
          send({ type: 'done', id: msg.id })
        }, () => {})
        return
      case 'stop':
        stop().finally(() => {
          send({ type: 'done', id: msg.id })
          // Exit normally so --cpu-prof writes its profile.
          setTimeout(() => process.exit(0), 50)
        })
    }
  })
  // The orchestrator went away: do not outlive it.
  process.on('disconnect', () => process.exit(0))
}
