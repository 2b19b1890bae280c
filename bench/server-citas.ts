/**
 * citas-live under test: the app registered as server.ts registers it, from the compiled output,
 * on one process. Reads its settings from the environment the orchestrator gives it.
 */
import Fastify from 'fastify'
import type { AddressInfo } from 'node:net'
import app from '../app.js'
import type { CitasLive } from '../plugins/namespace.js'
import { loggerOptions } from '../services/http/logging.js'
import { forcePublic, type AdapterName } from '../services/adapters/guard.js'
import { serveIpc } from './ipc.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** This process's citas-live registration (app.ts `decorator` option). */
    citasLive: CitasLive
  }
}

const env = process.env
// The citas-live-public server kind: the adapters' public paths (see bench/lib.ts).
if (env.BENCH_PUBLIC !== undefined && env.BENCH_PUBLIC !== '') {
  forcePublic(env.BENCH_PUBLIC === 'all' ? undefined : env.BENCH_PUBLIC.split(',') as AdapterName[])
}
const fastify = Fastify({ logger: loggerOptions(env.BENCH_LOG_LEVEL ?? 'warn'), return503OnClosing: true })
await fastify.register(app, {
  decorator: 'citasLive',
  db: { connectionString: env.DATABASE_URL as string },
  auth: { secret: env.JWT_SECRET as string },
  // By default one instance and no change capture: the bare-ws baseline has neither (see
  // BENCHMARKS.md). The change-capture scenarios run it as production does: capture on, with the
  // live plugin's default bus (PostgreSQL).
  live: env.BENCH_CHANGE_CAPTURE === 'on'
    ? { changeCapture: true }
    : { bus: 'memory', changeCapture: false },
  // The load comes from one machine with one service token: the per-caller notify limit and the
  // per-user connection limit would measure the limiter, not the server (the baseline has neither).
  limits: { notifyMax: 0, maxConnectionsPerUser: 0 }
})
await fastify.listen({ port: 0, host: '127.0.0.1' })
serveIpc(
  () => ({ queries: fastify.citasLive.stats.queryCount, connections: fastify.citasLive.hub.connectionCount }),
  () => fastify.close()
)
process.send?.({ type: 'ready', port: (fastify.server.address() as AddressInfo).port })
