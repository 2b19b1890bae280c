import type { FastifyError, FastifyInstance, onSendHookHandler } from 'fastify'
import fp from 'fastify-plugin'
import dbPlugin, { type DbPluginOptions } from './plugins/db.js'
import authPlugin, { type AuthPluginOptions } from './plugins/auth.js'
import statsPlugin, { type StatsPluginOptions } from './plugins/stats.js'
import hubPlugin, { type HubPluginOptions } from './plugins/hub.js'
import livePlugin, { type LivePluginOptions } from './plugins/live.js'
import metricsPlugin, { type MetricsPluginOptions } from './plugins/metrics.js'
import metricsRoutes from './routes/metrics.js'
import limitsPlugin, { type LimitsPluginOptions } from './plugins/limits.js'
import expiryPlugin, { type ExpiryPluginOptions } from './plugins/expiry.js'
import dbMonitorPlugin, { type DbMonitorPluginOptions } from './plugins/db-monitor.js'
import wsRoutes, { MAX_REFRESH_FRAME } from './routes/ws.js'
import openApiPlugin, { type OpenApiOptions } from './plugins/openapi.js'
import notifyRoutes from './routes/notify.js'
import sseRoutes from './routes/sse.js'
import healthRoutes from './routes/health.js'
import dashboardRoutes, { type DashboardOptions } from './routes/dashboard.js'
import { isAppError, replyError } from './services/http/errors.js'
import { redactUrl, requestForLog } from './services/http/redact.js'
import { kCitasLive, type CitasLive } from './plugins/namespace.js'
export { citasOf, type CitasLive } from './plugins/namespace.js'
import { registerWebsocket } from './plugins/websocket.js'
import { Int, resolveOptions } from './plugins/options.js'
import { Type, type Static } from '@sinclair/typebox'

export interface AppOptions extends Partial<Static<typeof AppOwnOptions>> {
  db: DbPluginOptions
  auth: AuthPluginOptions
  stats?: StatsPluginOptions
  hub?: HubPluginOptions
  live?: LivePluginOptions
  /** Prometheus metrics, exposed only with `token` (GET /metrics on this port) and/or `port`. `false`: not even collected. */
  metrics?: MetricsPluginOptions | false
  /** Origin allow-list, connection, subscription and message limits, /notify/cita rate. */
  limits?: LimitsPluginOptions
  /** token_expiring notice and closing at `exp`. */
  expiry?: ExpiryPluginOptions
  /** Probing the database after a failure and recomputing subscribed channels when it is back. */
  dbMonitor?: DbMonitorPluginOptions
  /** The live dashboard at `/` (under `prefix`). `false` when embedded in an app that serves `/` itself. */
  dashboard?: DashboardOptions | false
  /** Serve the OpenAPI document at `<prefix>/documentation/json`; off: no extra routes (a host's own @fastify/swagger lists ours). */
  openapi?: boolean | OpenApiOptions
}

/** The whole server as one plugin (server.ts, or a host app under a prefix): no env, no process hooks; the host gets only `decorator`. */
async function citasLive (host: FastifyInstance, opts: AppOptions) {
  const handle = {} as CitasLive
  if (opts.decorator !== undefined) host.decorate(opts.decorator, handle)
  // Not under `prefix`: the routes below put themselves under it.
  await host.register(app, { options: opts, handle })
}

export const AppOwnOptions = Type.Object({
  maxPayload: Int(256, 4096, { maximum: 1_048_576, description: 'Largest client frame in bytes; larger ones close the socket with 1009.' }),
  sseHeartbeatMs: Int(100, 15_000, { maximum: 30_000, description: 'An SSE stream gets a comment line this often (ms), so proxies keep an idle one open.' }),
  sseRetryMs: Int(100, 2000, { maximum: 60_000, description: 'Reconnection delay (ms) an SSE stream tells EventSource; a restart spreads reconnects over up to 5x this.' }),
  prefix: Type.String({ pattern: '^(/[A-Za-z0-9._~-]+)*$', default: '', description: 'Path prefix of the routes, e.g. /live.' }),
  decorator: Type.Optional(Type.String({ pattern: '^[A-Za-z_$][A-Za-z0-9_$]*$', description: 'Name of the one decorator citas-live adds to the host.' }))
})
const PLUGIN_OPTIONS = ['db', 'auth', 'stats', 'hub', 'live', 'metrics', 'limits', 'expiry', 'dbMonitor', 'dashboard', 'openapi']

async function app (fastify: FastifyInstance, { options: opts, handle }: { options: AppOptions, handle: CitasLive }) {
  const own = resolveOptions('app', AppOwnOptions, opts, PLUGIN_OPTIONS)
  fastify.decorate(kCitasLive, handle)
  await registerWebsocket(fastify, {
    // A refresh frame may carry a token as long as the handshake accepts; routes/ws.ts holds others to maxPayload.
    maxPayload: Math.max(own.maxPayload, MAX_REFRESH_FRAME),
    paths: () => [`${own.prefix}/ws`]
  })
  await fastify.register(dbPlugin, opts.db)
  await fastify.register(authPlugin, opts.auth)
  await fastify.register(statsPlugin, opts.stats ?? {})
  await fastify.register(hubPlugin, opts.hub ?? {})
  // The bus is signed with a key derived from the JWT secret unless it has one of its own.
  await fastify.register(livePlugin, { ...opts.live, busSecret: opts.live?.busSecret ?? opts.auth.secret })
  if (opts.metrics !== false) await fastify.register(metricsPlugin, opts.metrics ?? {})
  await fastify.register(limitsPlugin, opts.limits ?? {})
  await fastify.register(expiryPlugin, opts.expiry ?? {})
  await fastify.register(dbMonitorPlugin, opts.dbMonitor ?? {})

  // Before the routes: @fastify/swagger collects them as they are added.
  if (opts.openapi !== undefined && opts.openapi !== false) {
    await fastify.register(openApiPlugin, { ...(opts.openapi === true ? {} : opts.openapi), prefix: own.prefix })
  }
  const metricsToken = opts.metrics === false ? undefined : opts.metrics?.token
  await fastify.register(async (routes) => {
    routes.addHook('onSend', closeUnreadRequests)
    if (routes.prefix !== '') {
      // Fastify's own 404 logs and echoes the raw URL, `?token=` included (a typo of /ws is enough).
      routes.setNotFoundHandler((request, reply) => {
        const url = redactUrl(request.url)
        request.log.info({ method: request.method, url }, 'route not found')
        return replyError(reply, 404, 'not_found', `Route ${request.method}:${url} not found`)
      })
    }
    routes.setErrorHandler((err: FastifyError, request, reply) => {
      if (isAppError(err)) {
        if (err.statusCode >= 500) request.log.error({ err: err.cause ?? err }, err.message)
        return replyError(reply, err.statusCode, err.code, err.message)
      }
      // Validation errors among them (400).
      const status = err.statusCode ?? 500
      if (status >= 400 && status < 500) return replyError(reply, status, 'bad_request', err.message)
      request.log.error({ err }, 'request failed')
      return replyError(reply, 500, 'internal', 'internal error')
    })
    await routes.register(healthRoutes)
    await routes.register(wsRoutes, { maxPayload: own.maxPayload })
    await routes.register(sseRoutes, { heartbeatMs: own.sseHeartbeatMs, retryMs: own.sseRetryMs })
    await routes.register(notifyRoutes)
    if (metricsToken !== undefined) await routes.register(metricsRoutes, { token: metricsToken })
    if (opts.dashboard !== false) await routes.register(dashboardRoutes, opts.dashboard ?? {})
  }, {
    prefix: own.prefix,
    // No token in these routes' request lines, whatever the host's logger (pino takes any value, the types want a string).
    logSerializers: { req: requestForLog as unknown as (value: unknown) => string }
  })
}

/** An error answered before the body was read (401, 413) ends the connection, so a trickling body cannot hold it; server.ts adds it too. */
export const closeUnreadRequests: onSendHookHandler = (request, reply, payload, done) => {
  if (reply.statusCode >= 400 && !request.raw.complete) reply.header('connection', 'close')
  done(null, payload)
}

export default fp(citasLive, { fastify: '5.x', name: 'citas-live' })
