import { availableParallelism } from 'node:os'
import { Type, type Static, type TObject, type TSchema } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { createNetworkMatcher, createOriginCheck } from './services/http/limits.js'
import { AppOwnOptions, type AppOptions } from './app.js'
import { AuthOptions } from './plugins/auth.js'
import { DbOptions } from './plugins/db.js'
import { ExpiryOptions } from './plugins/expiry.js'
import { HubOptions } from './plugins/hub.js'
import { LimitsOptions } from './plugins/limits.js'
import { LiveOptions } from './plugins/live.js'
import { MetricsOptions } from './plugins/metrics.js'
import { StatsOptions } from './plugins/stats.js'
import { describe, Int, optionSchema } from './plugins/options.js'

/** The option schemas of the app plugin and of each plugin, by their key in AppOptions ('app': the app's own). */
export const SCHEMAS = {
  app: AppOwnOptions,
  db: DbOptions,
  auth: AuthOptions,
  stats: StatsOptions,
  hub: HubOptions,
  live: LiveOptions,
  limits: LimitsOptions,
  expiry: ExpiryOptions,
  metrics: MetricsOptions
} satisfies Record<string, TObject>
export type Part = keyof typeof SCHEMAS

/** Variables that set a plugin option, which holds default, bounds and description: add one here, then `npm run docs:config`. */
export const PLUGIN_ENV = {
  DATABASE_SESSION_URL: ['live', 'session'],
  STATS_TIMEZONE: ['stats', 'timezone'],
  JWT_CLAIM_NEGOCIO_ID: ['auth', 'claims.negocioId'],
  JWT_CLAIM_NEGOCIOS: ['auth', 'claims.negocios'],
  JWT_CLAIM_ROLE: ['auth', 'claims.role'],
  JWT_ADMIN_ROLE: ['auth', 'adminRole'],
  JWT_SERVICE_ROLE: ['auth', 'serviceRole'],
  NOTIFY_TRUSTED_NETWORKS: ['auth', 'notifyTrustedNetworks'],
  REDIS_URL: ['live', 'redisUrl'],
  BUS_SECRET: ['live', 'busSecret'],
  CHANGE_CAPTURE: ['live', 'changeCapture'],
  CHANGE_CAPTURE_POLL_MS: ['live', 'capturePollMs'],
  CHANGE_CAPTURE_STALL_MS: ['live', 'captureStallMs'],
  BUS_HEARTBEAT_MS: ['live', 'heartbeatMs'],
  BUS_DEADLINE_MS: ['live', 'deadlineMs'],
  STATS_COALESCE_MS: ['live', 'coalesceMs'],
  STATS_RECONCILE_SECONDS: ['live', 'reconcileSeconds'],
  METRICS_TOKEN: ['metrics', 'token'],
  METRICS_PORT: ['metrics', 'port'],
  METRICS_HOST: ['metrics', 'host'],
  ALLOWED_ORIGINS: ['limits', 'allowedOrigins'],
  WS_MAX_PAYLOAD: ['app', 'maxPayload'],
  WS_MAX_SUBSCRIPTIONS: ['limits', 'maxSubscriptions'],
  WS_MAX_CONNECTIONS_PER_USER: ['limits', 'maxConnectionsPerUser'],
  WS_MAX_CONNECTIONS_PER_IP: ['limits', 'maxConnectionsPerIp'],
  MAX_CONNECTIONS: ['limits', 'maxConnections'],
  WS_MESSAGE_RATE: ['limits', 'messageRate'],
  WS_MESSAGE_BURST: ['limits', 'messageBurst'],
  WS_MAX_BUFFERED_BYTES: ['hub', 'maxBufferedBytes'],
  WS_STALL_TIMEOUT_MS: ['hub', 'stallTimeoutMs'],
  WS_HEARTBEAT_MS: ['hub', 'heartbeatMs'],
  SSE_HEARTBEAT_MS: ['app', 'sseHeartbeatMs'],
  SSE_RETRY_MS: ['app', 'sseRetryMs'],
  TOKEN_EXPIRY_WARNING_MS: ['expiry', 'warningMs'],
  NOTIFY_RATE_MAX: ['limits', 'notifyMax'],
  NOTIFY_RATE_WINDOW_MS: ['limits', 'notifyWindowMs'],
  DB_STATEMENT_TIMEOUT_MS: ['db', 'statementTimeoutMs'],
  DB_CONNECTION_TIMEOUT_MS: ['db', 'connectionTimeoutMs']
} as const satisfies Record<string, readonly [Part, string]>

const OnOff = (opts: object) => Type.Union([Type.Literal('on'), Type.Literal('off')], opts)

/** An option's schema as the environment reads it: booleans as on/off, lists as comma lists, a connection as a URL; same default. */
function envSchemaOf (option: TSchema): TSchema {
  const def = option.default as unknown
  // A comma list; unset stands for the option's default (an empty list reads as unset).
  if (option.type === 'array') return Type.Optional(Type.String({ minLength: 1 }))
  const schema = option.type === 'boolean'
    ? OnOff(def === undefined ? {} : { default: def === true ? 'on' : 'off' })
    : (option.anyOf as TSchema[] | undefined)?.find(s => s.type === 'string') ?? option
  return def === undefined ? Type.Optional(schema) : schema
}

const pluginEnv = Object.fromEntries(Object.entries(PLUGIN_ENV).map(([name, [part, path]]) =>
  [name, envSchemaOf(optionSchema(SCHEMAS[part], path))]))

/** The variables of the process itself (those of a plugin option come from the plugin's own schema). */
const ProcessEnv = Type.Object({
  PORT: Int(0, 8080, { maximum: 65535, description: 'HTTP and WebSocket port. 0: any free port.' }),
  HOST: Type.String({ minLength: 1, default: '0.0.0.0', description: 'Address to listen on.' }),
  DATABASE_URL: Type.Optional(Type.String({ pattern: '^postgres(ql)?://', description: 'postgres:// URL of the database. Unset: the embedded demo database (EMBEDDED_PG_PORT, EMBEDDED_PG_DIR).' })),
  JWT_SECRET: Type.Optional(Type.String({ minLength: 16, description: 'HS256 secret shared with the REST API that signs the tokens. Required when DATABASE_URL is set. Unset in the demo: a random one kept in EMBEDDED_PG_DIR/jwt-secret (delete the file to rotate it).' })),
  WORKERS: Type.Union([Type.Literal('auto'), Type.Integer({ minimum: 1, maximum: 256 })], {
    default: 1,
    errorMessage: 'a number of processes from 1 to 256, or auto',
    description: 'Processes serving the port, each an instance on the bus (one of them the capture leader): a worker that dies is restarted, SIGTERM closes them all. auto: one per core. Needs BUS postgres or redis when above 1.'
  }),
  LOG_LEVEL: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map(l => Type.Literal(l)), { default: 'info', description: 'Level of the JSON log on standard output.' }),
  BUS: Type.Union((['auto', 'postgres', 'redis', 'memory'] as const).map(l => Type.Literal(l)), { default: 'auto', description: 'How instances share stats: postgres (LISTEN/NOTIFY on the database), redis (pub/sub on REDIS_URL), memory (one process). auto: redis when REDIS_URL is set, else postgres.' }),
  DEMO_ACTIVITY: OnOff({ default: 'on', description: 'In the embedded demo only: create, attend and cancel citas every few seconds, so the dashboard moves.' }),
  EMBEDDED_PG_PORT: Int(0, 54329, { maximum: 65535, description: 'Port of the embedded demo PostgreSQL (loopback only). 0: a free port picked at each start.' }),
  EMBEDDED_PG_DIR: Type.String({ minLength: 1, default: '.data/postgres', description: 'Folder of the embedded demo: PostgreSQL\'s data in data/, and beside it its password, the demo\'s JWT secret and a lock file.' }),
  TRUST_PROXY: Type.Optional(Type.String({ minLength: 1, description: 'A comma list of your proxies\' addresses or CIDRs: a request from one of them comes from the rightmost X-Forwarded-For address not added by one of them (per-IP limits, NOTIFY_TRUSTED_NETWORKS, logs). true believes any X-Forwarded-For, and is refused together with NOTIFY_TRUSTED_NETWORKS or WS_MAX_CONNECTIONS_PER_IP.' })),
  SHUTDOWN_GRACE_MS: Int(100, 10_000, { description: 'On SIGTERM or SIGINT: time to close sockets (1012) and finish requests before the process exits anyway, in ms. HTTP requests still arriving at 80 % of it are cut, so it exits 0.' }),
  HTTP_REQUEST_TIMEOUT_MS: Int(100, 10_000, { description: 'A whole HTTP request (headers and body) must arrive within this (ms), else the connection is closed (checked every second). WebSockets are not affected once upgraded.' }),
  HTTP_KEEP_ALIVE_TIMEOUT_MS: Int(100, 72_000, { description: 'An idle keep-alive connection is closed after this (ms). Keep it above your load balancer\'s idle timeout (60 s on most).' }),
  HTTP_BODY_LIMIT: Int(1024, 16_384, { maximum: 1_048_576, description: 'Largest HTTP request body in bytes (413 past it), on routes without a limit of their own: /notify/cita has its own, 16 KiB, and no other route takes a body.' })
})

/** Every variable the server reads; nothing else touches process.env (server.ts turns the result into app options). */
export const EnvSchema = Type.Object({ ...ProcessEnv.properties, ...pluginEnv })

type PluginEnv = { -readonly [K in keyof typeof PLUGIN_ENV]?: string | number }
/** The validated environment: typed for the process's own variables, loosely for the plugins' (two have defaults). */
export type Env = Static<typeof ProcessEnv> & PluginEnv & { JWT_CLAIM_ROLE: string, JWT_SERVICE_ROLE: string }

export class ConfigError extends Error {
  override name = 'ConfigError'
}

const isNumeric = (schema: TSchema): boolean => schema.type === 'integer' || schema.type === 'number' || (schema.anyOf as TSchema[] | undefined)?.some(isNumeric) === true
const numberKeys = new Set(Object.entries(EnvSchema.properties).filter(([, schema]) => isNumeric(schema as TSchema)).map(([key]) => key))

/** Validates process.env (empty strings count as unset); throws a ConfigError of one line naming the first bad variable. */
export function loadEnv (source: Record<string, string | undefined>): Env {
  const raw: Record<string, unknown> = {}
  for (const key of Object.keys(EnvSchema.properties)) {
    const value = source[key]
    if (value === undefined || value === '') continue
    raw[key] = numberKeys.has(key) && /^\d+(\.\d+)?$/.test(value) ? Number(value) : value
  }
  const env = Value.Default(EnvSchema, raw) as Env
  const first = Value.Errors(EnvSchema, env).First()
  if (first !== undefined) {
    const name = first.path.replace(/^\//, '') || 'environment'
    const shown = name in raw ? ` (got ${JSON.stringify(redactValue(name, raw[name]))})` : ''
    throw new ConfigError(`invalid ${name}: ${describe(first.schema, first.message)}${shown}`)
  }
  if (workerCount(env) > 1 && busKind(env) === 'memory') throw new ConfigError('invalid WORKERS: several workers share stats on a bus: BUS=memory is one process (use postgres or redis)')
  if (env.BUS === 'redis' && env.REDIS_URL === undefined) throw new ConfigError('invalid REDIS_URL: required when BUS=redis')
  // What the plugins will build from these variables, built once here so a bad one stops the start with its name.
  const check = (name: keyof Env, make: (list: string[]) => unknown, hint = ''): void => {
    try { make(commaList(String(env[name] ?? ''))) } catch (err) { throw new ConfigError(`invalid ${name}: ${(err as Error).message}${hint}`) }
  }
  check('NOTIFY_TRUSTED_NETWORKS', createNetworkMatcher)
  const proxies = trustProxy(env.TRUST_PROXY)
  const trusting = proxies !== true
    ? undefined
    : env.NOTIFY_TRUSTED_NETWORKS !== undefined ? 'NOTIFY_TRUSTED_NETWORKS' : Number(env.WS_MAX_CONNECTIONS_PER_IP ?? 0) > 0 ? 'WS_MAX_CONNECTIONS_PER_IP' : undefined
  if (trusting !== undefined) {
    throw new ConfigError(`invalid TRUST_PROXY: "true" believes any X-Forwarded-For, so a client could claim an address ${trusting} trusts or count under another's: list your proxies instead (TRUST_PROXY=10.0.0.5,10.0.0.6 or a CIDR such as 10.0.0.0/24)`)
  }
  if (typeof proxies === 'string') check('TRUST_PROXY', createNetworkMatcher, ' (true, false, or a comma list of proxy addresses or CIDRs)')
  check('ALLOWED_ORIGINS', createOriginCheck)
  return env
}

/** The AppOptions parts the environment sets: only variables set or with a default (the plugins fill in the rest alike). */
export function optionsFromEnv (env: Env): Pick<AppOptions, 'maxPayload' | 'sseHeartbeatMs' | 'sseRetryMs'> & Record<Exclude<Part, 'app'>, Record<string, unknown>> {
  const parts: Record<Part, Record<string, unknown>> = { app: {}, db: {}, auth: {}, stats: {}, hub: {}, live: {}, limits: {}, expiry: {}, metrics: {} }
  for (const [name, [part, path]] of Object.entries(PLUGIN_ENV) as Array<[keyof typeof PLUGIN_ENV, readonly [Part, string]]>) {
    const raw = env[name]
    if (raw === undefined) continue
    const option = optionSchema(SCHEMAS[part], path)
    const value = option.type === 'boolean' ? raw === 'on' : option.type === 'array' ? commaList(String(raw)) : raw
    const keys = path.split('.')
    let at = parts[part]
    for (const key of keys.slice(0, -1)) at = (at[key] ??= {}) as Record<string, unknown>
    at[keys.at(-1) as string] = value
  }
  const { app, ...plugins } = parts
  return { ...(app as Pick<AppOptions, 'maxPayload' | 'sseHeartbeatMs' | 'sseRetryMs'>), ...plugins }
}

export function commaList (value: string): string[] {
  return value.split(',').map(s => s.trim()).filter(s => s !== '')
}

/** TRUST_PROXY as Fastify's trustProxy: `true`, or a comma list of proxy addresses/CIDRs. */
export function trustProxy (value: string | undefined): boolean | string {
  if (value === undefined || value === 'false') return false
  return value === 'true' ? true : value
}

function redactValue (name: string, value: unknown): unknown {
  if (name === 'JWT_SECRET' || name === 'METRICS_TOKEN' || name === 'BUS_SECRET') return '<redacted>'
  if ((name === 'DATABASE_URL' || name === 'DATABASE_SESSION_URL') && typeof value === 'string') return value.replace(/\/\/([^@/]*)@/, '//<redacted>@')
  return value
}

export function workerCount (env: Pick<Env, 'WORKERS'>): number {
  return env.WORKERS === 'auto' ? availableParallelism() : env.WORKERS
}

export function busKind (env: Env): 'postgres' | 'redis' | 'memory' {
  if (env.BUS !== 'auto') return env.BUS
  return env.REDIS_URL !== undefined ? 'redis' : 'postgres'
}
