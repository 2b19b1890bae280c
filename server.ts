import Fastify from 'fastify'
import closeWithGrace from 'close-with-grace'
import { createSigner } from 'fast-jwt'
import pg from 'pg'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import app, { closeUnreadRequestsIn } from './app.js'
import type { CitasLive } from './plugins/namespace.js'
import { busKind, commaList, ConfigError, loadEnv, optionsFromEnv, trustProxy, type Env } from './config.js'
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

const fastify = Fastify({
  logger: loggerOptions(env.LOG_LEVEL),
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
closeUnreadRequestsIn(fastify)
const log = fastify.log

let embedded: EmbeddedPostgres | undefined
let databaseUrl = env.DATABASE_URL
let secret = env.JWT_SECRET ?? ''
let demoNegocios: string[] = []
if (databaseUrl === undefined) {
  log.info({ dir: env.EMBEDDED_PG_DIR, port: env.EMBEDDED_PG_PORT }, 'DATABASE_URL is not set: starting the embedded PostgreSQL demo')
  try {
    embedded = await startEmbeddedPostgres({
      dir: env.EMBEDDED_PG_DIR,
      port: env.EMBEDDED_PG_PORT,
      onLog: (line) => log.debug({ postgres: line }, 'embedded postgres'),
      onRecover: (message) => log.warn(message)
    })
  } catch (err) {
    fail((err as Error).message)
  }
  databaseUrl = embedded.connectionString
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 1 })
  try {
    const { applied } = await migrate(pool)
    if (applied.length > 0) log.info({ applied }, 'migrations applied')
    demoNegocios = await seedDemo(pool)
    // Kept beside the database, so the tokens of an open dashboard still work after a restart.
    if (secret === '') secret = await keptSecret(join(embedded.dir, 'jwt-secret'))
  } catch (err) {
    await pool.end().catch(() => {})
    await embedded.stop()
    fail(`the embedded demo database could not be prepared: ${(err as Error).message}`)
  }
  await pool.end()
}

const fromEnv = optionsFromEnv(env)
await fastify.register(app, {
  ...fromEnv,
  decorator: 'citasLive',
  db: { ...fromEnv.db, connectionString: databaseUrl },
  auth: { ...fromEnv.auth, secret },
  hub: {
    ...fromEnv.hub,
    // Leave the last part of the grace period to the HTTP requests still in flight.
    closeTimeoutMs: Math.floor(env.SHUTDOWN_GRACE_MS / 2)
  },
  live: { ...fromEnv.live, bus: busKind(env) },
  // The proxies TRUST_PROXY lists decide, with the socket, where a request comes from for the
  // per-IP limits and NOTIFY_TRUSTED_NETWORKS (loadEnv refuses "true" with either).
  limits: { ...fromEnv.limits, trustedProxies: typeof trustProxy(env.TRUST_PROXY) === 'string' ? commaList(String(env.TRUST_PROXY)) : [] },
  // Metrics are exposed only with a token or a port of their own.
  metrics: fromEnv.metrics,
  openapi: true
})

// While closing, answers end their keep-alive connection: an idle keep-alive socket would otherwise
// hold server.close() open until the keep-alive timeout, past the grace period.
let closing = false
fastify.addHook('preClose', async () => { closing = true })
fastify.addHook('onSend', async (_request, reply) => {
  if (closing) reply.header('connection', 'close')
})

let demoActivity: { stop: () => void } | undefined
closeWithGrace({ delay: env.SHUTDOWN_GRACE_MS, logger: log }, async ({ signal, err }) => {
  if (err !== undefined) log.error({ err }, 'shutting down after an error')
  else log.info({ signal }, 'shutting down')
  demoActivity?.stop()
  // Requests still arriving (a slow upload) would hold close() past the grace: cut them near its end.
  const cut = setTimeout(() => fastify.server.closeAllConnections(), Math.floor(env.SHUTDOWN_GRACE_MS * 0.8))
  cut.unref()
  await fastify.close()
  clearTimeout(cut)
  await embedded?.stop()
})

await fastify.ready()
try {
  await fastify.citasLive.pool.query('SELECT negocio_id, fecha_hora, estado FROM citas LIMIT 0')
} catch (err) {
  log.warn({ err }, 'cannot read the citas table yet: is the database up and migrated (npm run db:migrate)?')
}
try {
  await fastify.listen({ port: env.PORT, host: env.HOST })
} catch (err) {
  await fastify.close()
  await embedded?.stop()
  const code = (err as NodeJS.ErrnoException).code
  if (code === 'EADDRINUSE') {
    const holder = await portHolder(env.PORT)
    fail(`port ${env.PORT} on ${env.HOST} is in use${holder !== undefined ? ` by ${holder}` : ''}: stop it, or set PORT to another port (0: any free port)`)
  }
  fail(`cannot listen on ${env.HOST}:${env.PORT}: ${(err as Error).message}`)
}

if (embedded !== undefined) {
  const host = env.HOST === '0.0.0.0' || env.HOST === '::' ? 'localhost' : env.HOST
  const base = `${host}:${(fastify.server.address() as AddressInfo).port}`
  const sign = createSigner({ key: secret, algorithm: 'HS256', expiresIn: 24 * 3600_000 })
  const userToken = sign({ sub: 'demo-user', negocios: demoNegocios })
  const serviceToken = sign({ sub: 'demo-rest-api', [env.JWT_CLAIM_ROLE]: env.JWT_SERVICE_ROLE })
  if (env.DEMO_ACTIVITY === 'on') {
    // Writes citas directly, like another service would: the change-capture trigger pushes them.
    demoActivity = startDemoActivity(fastify.citasLive.pool, demoNegocios, {
      onError: (err) => log.warn({ err }, 'demo activity failed')
    })
  }
  log.info({ negocios: demoNegocios, ws: `ws://${base}/ws`, activity: env.DEMO_ACTIVITY }, 'demo ready')
  // The demo's whole point is a token to paste: print it for the human, outside the JSON log.
  process.stdout.write([
    '',
    `citas-live demo is running (embedded PostgreSQL, demo data, ${env.JWT_SECRET !== undefined ? 'secret from JWT_SECRET' : `secret kept in ${join(env.EMBEDDED_PG_DIR, 'jwt-secret')}`})`,
    `  negocios:      ${demoNegocios.join(', ')}`,
    `  user token:    ${userToken}`,
    `  dashboard:     http://${base}/?token=${userToken}`,
    `  WebSocket:     ws://${base}/ws?token=${userToken}`,
    `  SSE:           curl -N 'http://${base}/sse?channels=estadisticas:${demoNegocios[0] ?? ''}' -H 'authorization: Bearer ${userToken}'`,
    `  subscribe:     {"type":"subscribe","data":{"channel":"estadisticas:${demoNegocios[0] ?? ''}"}}`,
    '  notify:',
    `    curl -s -X POST http://${base}/notify/cita -H 'content-type: application/json' \\`,
    `      -H 'authorization: Bearer ${serviceToken}' \\`,
    `      -d '{"negocio_id":"${demoNegocios[0] ?? ''}","action":"created"}'`,
    `  psql:          ${embedded.connectionString}`,
    '', ''
  ].join('\n'))
}
