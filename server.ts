import Fastify, { type FastifyBaseLogger } from 'fastify'
import closeWithGrace from 'close-with-grace'
import cluster from 'node:cluster'
import { createSigner } from 'fast-jwt'
import pg from 'pg'
import { pino } from 'pino'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import app, { closeUnreadRequests } from './app.js'
import type { CitasLive } from './plugins/namespace.js'
import { busKind, commaList, ConfigError, loadEnv, optionsFromEnv, trustProxy, workerCount, type Env } from './config.js'
import { onPrimaryShutdown, runPrimary, workerMetrics } from './cluster.js'
import { loggerOptions } from './services/http/logging.js'
import { migrate } from './db/migrations.js'
import { seedDemo, startDemoActivity } from './services/demo/demo.js'
import { keptSecret, startEmbeddedPostgres, type EmbeddedPostgres } from './services/demo/embedded-postgres.js'
import { portHolder } from './services/demo/processes.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** This process's citas-live registration (app.ts `decorator` option). */
    citasLive: CitasLive
  }
}

function fail (message: string): never {
  process.stderr.write(`citas-live: ${message}\n`)
  process.exit(1)
}

/** Requests in flight when a process is full of clients: it stops accepting connections past its capacity plus these. */
const REQUEST_HEADROOM = 256

let env: Env
try {
  env = loadEnv(process.env)
} catch (err) {
  if (err instanceof ConfigError) fail(err.message)
  throw err
}
if (env.DATABASE_URL !== undefined && env.JWT_SECRET === undefined) {
  fail('invalid JWT_SECRET: required when DATABASE_URL is set (it must match the secret your REST API signs tokens with)')
}
const { stream, ...logOptions } = loggerOptions(env.LOG_LEVEL) as pino.LoggerOptions & { stream: pino.DestinationStream }
const log = pino(logOptions, stream)
const workers = workerCount(env)

/** The embedded demo database (DATABASE_URL unset): started, migrated and seeded, with its JWT secret. */
async function startDemoDatabase (): Promise<{ embedded: EmbeddedPostgres, secret: string, negocios: string[] }> {
  log.info({ dir: env.EMBEDDED_PG_DIR, port: env.EMBEDDED_PG_PORT }, 'DATABASE_URL is not set: starting the embedded PostgreSQL demo')
  const embedded = await startEmbeddedPostgres({
    dir: env.EMBEDDED_PG_DIR,
    port: env.EMBEDDED_PG_PORT,
    onLog: (line) => log.debug({ postgres: line }, 'embedded postgres'),
    onRecover: (message) => log.warn(message)
  }).catch((err: unknown) => fail((err as Error).message))
  const pool = new pg.Pool({ connectionString: embedded.connectionString, max: 1 })
  try {
    const { applied } = await migrate(pool)
    if (applied.length > 0) log.info({ applied }, 'migrations applied')
    const negocios = await seedDemo(pool)
    // Kept beside the database, so the tokens of an open dashboard still work after a restart.
    const secret = env.JWT_SECRET ?? await keptSecret(join(embedded.dir, 'jwt-secret'))
    return { embedded, secret, negocios }
  } catch (err) {
    await embedded.stop()
    fail(`the embedded demo database could not be prepared: ${(err as Error).message}`)
  } finally {
    await pool.end().catch(() => {})
  }
}

/** One whole server in this process (WORKERS=1, or a worker); resolves once it listens. */
async function serve (databaseUrl: string, secret: string, demo: { closing: () => void, closed: () => Promise<void> }) {
  const fastify = Fastify({
    loggerInstance: log as FastifyBaseLogger,
    return503OnClosing: true,
    trustProxy: trustProxy(env.TRUST_PROXY),
    // A whole request (headers and body) must arrive within this; a trickle cannot hold a socket.
    requestTimeout: env.HTTP_REQUEST_TIMEOUT_MS,
    keepAliveTimeout: env.HTTP_KEEP_ALIVE_TIMEOUT_MS,
    bodyLimit: env.HTTP_BODY_LIMIT,
    http: {
      requestTimeout: env.HTTP_REQUEST_TIMEOUT_MS,
      headersTimeout: env.HTTP_REQUEST_TIMEOUT_MS,
      // Node checks those timeouts on this period (30 s by default), so a late request goes within a second.
      connectionsCheckingInterval: 1000
    }
  })
  // Refused requests end their connection instead of reading a body still coming (404s included).
  fastify.addHook('onSend', closeUnreadRequests)
  const fromEnv = optionsFromEnv(env)
  await fastify.register(app, {
    ...fromEnv,
    decorator: 'citasLive',
    db: { ...fromEnv.db, connectionString: databaseUrl },
    auth: { ...fromEnv.auth, secret },
    // Leave the last part of the grace period to the HTTP requests still in flight.
    hub: { ...fromEnv.hub, closeTimeoutMs: Math.floor(env.SHUTDOWN_GRACE_MS / 2) },
    live: { ...fromEnv.live, bus: busKind(env) },
    // Where a request comes from for the per-IP limits and NOTIFY_TRUSTED_NETWORKS (loadEnv refuses "true" with either).
    limits: { ...fromEnv.limits, trustedProxies: typeof trustProxy(env.TRUST_PROXY) === 'string' ? commaList(String(env.TRUST_PROXY)) : [] },
    // Exposed only with a token or a port of their own; in a worker, the primary serves the port and adds every worker up.
    metrics: cluster.isWorker ? { ...fromEnv.metrics, port: undefined, scrape: workerMetrics } : fromEnv.metrics,
    openapi: true
  })

  // While closing, answers end their keep-alive connection: an idle one would hold server.close() past the grace period.
  let closing = false
  fastify.addHook('preClose', async () => { closing = true })
  fastify.addHook('onSend', async (_request, reply) => {
    if (closing) reply.header('connection', 'close')
  })

  const grace = closeWithGrace({ delay: env.SHUTDOWN_GRACE_MS, logger: log }, async ({ signal, err }) => {
    if (err !== undefined) log.error({ err }, 'shutting down after an error')
    else log.info({ signal }, 'shutting down')
    demo.closing()
    // Requests still arriving (a slow upload) would hold close() past the grace: cut them near its end.
    const cut = setTimeout(() => fastify.server.closeAllConnections(), Math.floor(env.SHUTDOWN_GRACE_MS * 0.8)).unref()
    await fastify.close()
    clearTimeout(cut)
    await demo.closed()
  })
  if (cluster.isWorker) onPrimaryShutdown(grace.close)

  await fastify.ready()
  // Past capacity plus requests in flight it takes no connection at all, so its pool and bus always have files to open.
  const capacity = fastify.citasLive.limits.capacity
  if (Number.isFinite(capacity)) fastify.server.maxConnections = capacity + REQUEST_HEADROOM
  await fastify.citasLive.pool.query('SELECT negocio_id, fecha_hora, estado FROM citas LIMIT 0').catch((err: unknown) => {
    log.warn({ err }, 'cannot read the citas table yet: is the database up and migrated (npm run db:migrate)?')
  })
  try {
    await fastify.listen({ port: env.PORT, host: env.HOST })
  } catch (err) {
    await fastify.close()
    await demo.closed()
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      const holder = await portHolder(env.PORT)
      fail(`port ${env.PORT} on ${env.HOST} is in use${holder !== undefined ? ` by ${holder}` : ''}: stop it, or set PORT to another port (0: any free port)`)
    }
    fail(`cannot listen on ${env.HOST}:${env.PORT}: ${(err as Error).message}`)
  }
  return fastify
}

function printBanner (embedded: EmbeddedPostgres, address: { port: number }, secret: string, negocios: string[]): void {
  const host = env.HOST === '0.0.0.0' || env.HOST === '::' ? 'localhost' : env.HOST
  const base = `${host}:${address.port}`
  const sign = createSigner({ key: secret, algorithm: 'HS256', expiresIn: 24 * 3600_000 })
  const userToken = sign({ sub: 'demo-user', negocios })
  const serviceToken = sign({ sub: 'demo-rest-api', [env.JWT_CLAIM_ROLE]: env.JWT_SERVICE_ROLE })
  log.info({ negocios, ws: `ws://${base}/ws`, activity: env.DEMO_ACTIVITY, workers }, 'demo ready')
  // The demo's whole point is a token to paste: print it for the human, outside the JSON log.
  process.stdout.write([
    '',
    `citas-live demo is running (embedded PostgreSQL, demo data, ${env.JWT_SECRET !== undefined ? 'secret from JWT_SECRET' : `secret kept in ${join(env.EMBEDDED_PG_DIR, 'jwt-secret')}`})`,
    `  negocios:      ${negocios.join(', ')}`,
    `  user token:    ${userToken}`,
    `  dashboard:     http://${base}/?token=${userToken}`,
    `  WebSocket:     ws://${base}/ws?token=${userToken}`,
    `  SSE:           curl -N 'http://${base}/sse?channels=estadisticas:${negocios[0] ?? ''}' -H 'authorization: Bearer ${userToken}'`,
    `  subscribe:     {"type":"subscribe","data":{"channel":"estadisticas:${negocios[0] ?? ''}"}}`,
    '  notify:',
    `    curl -s -X POST http://${base}/notify/cita -H 'content-type: application/json' \\`,
    `      -H 'authorization: Bearer ${serviceToken}' \\`,
    `      -d '{"negocio_id":"${negocios[0] ?? ''}","action":"created"}'`,
    `  psql:          ${embedded.connectionString}`,
    '', ''
  ].join('\n'))
}

if (cluster.isWorker) {
  // The primary checked the environment and set DATABASE_URL and JWT_SECRET.
  await serve(env.DATABASE_URL as string, env.JWT_SECRET as string, { closing: () => {}, closed: async () => {} })
} else {
  const demo = env.DATABASE_URL === undefined ? await startDemoDatabase() : undefined
  const databaseUrl = demo?.embedded.connectionString ?? env.DATABASE_URL as string
  const secret = demo?.secret ?? env.JWT_SECRET as string
  let activity: { stop: () => void } | undefined
  let activityPool: pg.Pool | undefined
  const demoHooks = {
    closing: () => { activity?.stop() },
    closed: async () => {
      await activityPool?.end().catch(() => {})
      await demo?.embedded.stop()
    }
  }
  let address: { port: number }
  let pool: pg.Pool | undefined
  if (workers > 1) {
    const primary = runPrimary({
      workers,
      env: { DATABASE_URL: databaseUrl, JWT_SECRET: secret },
      graceMs: env.SHUTDOWN_GRACE_MS,
      metrics: env.METRICS_PORT === undefined ? undefined : { port: Number(env.METRICS_PORT), host: String(env.METRICS_HOST) },
      log
    })
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      process.once(signal, () => {
        demoHooks.closing()
        primary.stop(signal).then(demoHooks.closed).then(() => process.exit(0), () => process.exit(1))
      })
    }
    address = await primary.listening
    log.info({ workers, port: address.port }, 'workers listening')
    if (demo !== undefined) pool = activityPool = new pg.Pool({ connectionString: databaseUrl, max: 1 })
  } else {
    const fastify = await serve(databaseUrl, secret, demoHooks)
    address = fastify.server.address() as AddressInfo
    pool = fastify.citasLive.pool
  }
  if (demo !== undefined && pool !== undefined) {
    // Writes citas directly, like another service would: the change-capture trigger pushes them.
    if (env.DEMO_ACTIVITY === 'on') activity = startDemoActivity(pool, demo.negocios, (err) => log.warn({ err }, 'demo activity failed'))
    printBanner(demo.embedded, address, secret, demo.negocios)
  }
}
