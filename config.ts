import { Type, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { isValidTimeZone } from './services/stats.js'
import { normalizeOrigin } from './services/limits.js'

/**
 * Every environment variable the server reads. Nothing else in the code base touches process.env:
 * server.ts turns the validated result into plain options for app.ts.
 */
export const EnvSchema = Type.Object({
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 8080 }),
  HOST: Type.String({ minLength: 1, default: '0.0.0.0' }),
  DATABASE_URL: Type.Optional(Type.String({ pattern: '^postgres(ql)?://' })),
  DATABASE_SESSION_URL: Type.Optional(Type.String({ pattern: '^postgres(ql)?://' })),
  JWT_SECRET: Type.Optional(Type.String({ minLength: 16 })),
  LOG_LEVEL: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map(l => Type.Literal(l)), { default: 'info' }),
  STATS_TIMEZONE: Type.String({ default: 'UTC' }),
  JWT_CLAIM_NEGOCIO_ID: Type.String({ pattern: '^[A-Za-z0-9_.:-]{1,64}$', default: 'negocio_id' }),
  JWT_CLAIM_NEGOCIOS: Type.String({ pattern: '^[A-Za-z0-9_.:-]{1,64}$', default: 'negocios' }),
  JWT_CLAIM_ROLE: Type.String({ pattern: '^[A-Za-z0-9_.:-]{1,64}$', default: 'role' }),
  JWT_ADMIN_ROLE: Type.Optional(Type.String({ minLength: 1 })),
  JWT_SERVICE_ROLE: Type.String({ minLength: 1, default: 'service' }),
  REDIS_URL: Type.Optional(Type.String({ pattern: '^rediss?://' })),
  BUS: Type.Union(['auto', 'postgres', 'redis', 'memory'].map(l => Type.Literal(l)), { default: 'auto' }),
  BUS_SECRET: Type.Optional(Type.String({ minLength: 16 })),
  CHANGE_CAPTURE: Type.Union([Type.Literal('on'), Type.Literal('off')], { default: 'on' }),
  CHANGE_CAPTURE_POLL_MS: Type.Integer({ minimum: 5, maximum: 60_000, default: 50 }),
  BUS_HEARTBEAT_MS: Type.Integer({ minimum: 100, maximum: 60_000, default: 5000 }),
  BUS_DEADLINE_MS: Type.Integer({ minimum: 100, maximum: 60_000, default: 5000 }),
  STATS_COALESCE_MS: Type.Integer({ minimum: 0, maximum: 60_000, default: 100 }),
  STATS_RECONCILE_SECONDS: Type.Integer({ minimum: 0, maximum: 86_400, default: 0 }),
  DEMO_ACTIVITY: Type.Union([Type.Literal('on'), Type.Literal('off')], { default: 'on' }),
  METRICS_TOKEN: Type.Optional(Type.String({ minLength: 16 })),
  METRICS_PORT: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
  METRICS_HOST: Type.String({ minLength: 1, default: '127.0.0.1' }),
  EMBEDDED_PG_PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 54329 }),
  EMBEDDED_PG_DIR: Type.String({ minLength: 1, default: '.data/postgres' }),
  ALLOWED_ORIGINS: Type.Optional(Type.String({ minLength: 1 })),
  TRUST_PROXY: Type.Optional(Type.String({ minLength: 1 })),
  WS_MAX_PAYLOAD: Type.Integer({ minimum: 256, maximum: 1_048_576, default: 4096 }),
  WS_MAX_SUBSCRIPTIONS: Type.Integer({ minimum: 1, default: 100 }),
  WS_MAX_CONNECTIONS_PER_USER: Type.Integer({ minimum: 0, default: 20 }),
  WS_MAX_CONNECTIONS_PER_IP: Type.Integer({ minimum: 0, default: 0 }),
  WS_MESSAGE_RATE: Type.Integer({ minimum: 1, default: 10 }),
  WS_MESSAGE_BURST: Type.Integer({ minimum: 1, default: 20 }),
  WS_MAX_BUFFERED_BYTES: Type.Integer({ minimum: 1024, default: 65_536 }),
  WS_STALL_TIMEOUT_MS: Type.Integer({ minimum: 10, default: 30_000 }),
  WS_HEARTBEAT_MS: Type.Integer({ minimum: 10, default: 30_000 }),
  TOKEN_EXPIRY_WARNING_MS: Type.Integer({ minimum: 0, default: 30_000 }),
  NOTIFY_RATE_MAX: Type.Integer({ minimum: 0, default: 1200 }),
  NOTIFY_RATE_WINDOW_MS: Type.Integer({ minimum: 1, default: 60_000 }),
  DB_STATEMENT_TIMEOUT_MS: Type.Integer({ minimum: 1, default: 5000 }),
  DB_CONNECTION_TIMEOUT_MS: Type.Integer({ minimum: 1, default: 5000 }),
  SHUTDOWN_GRACE_MS: Type.Integer({ minimum: 100, default: 10_000 }),
  HTTP_REQUEST_TIMEOUT_MS: Type.Integer({ minimum: 100, default: 10_000 }),
  HTTP_KEEP_ALIVE_TIMEOUT_MS: Type.Integer({ minimum: 100, default: 72_000 }),
  HTTP_BODY_LIMIT: Type.Integer({ minimum: 1024, maximum: 1_048_576, default: 16_384 })
})
export type Env = Static<typeof EnvSchema>

export class ConfigError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'ConfigError'
  }
}

const integerKeys = new Set(Object.entries(EnvSchema.properties)
  .filter(([, schema]) => (schema as { type?: string }).type === 'integer')
  .map(([key]) => key))

/**
 * Validates process.env (or any record) against EnvSchema. Empty strings count as unset.
 * Throws a ConfigError whose message is one line naming the first bad variable.
 */
export function loadEnv (source: Record<string, string | undefined>): Env {
  const raw: Record<string, unknown> = {}
  for (const key of Object.keys(EnvSchema.properties)) {
    const value = source[key]
    if (value === undefined || value === '') continue
    raw[key] = integerKeys.has(key) && /^\d+$/.test(value) ? Number(value) : value
  }
  const env = Value.Default(EnvSchema, raw) as Env
  const first = Value.Errors(EnvSchema, env).First()
  if (first !== undefined) {
    const name = first.path.replace(/^\//, '') || 'environment'
    const shown = name in raw ? ` (got ${JSON.stringify(redactValue(name, raw[name]))})` : ''
    throw new ConfigError(`invalid ${name}: ${first.message}${shown}`)
  }
  if (env.BUS === 'redis' && env.REDIS_URL === undefined) {
    throw new ConfigError('invalid REDIS_URL: required when BUS=redis')
  }
  if (!isValidTimeZone(env.STATS_TIMEZONE)) {
    throw new ConfigError(`invalid STATS_TIMEZONE: not an IANA time zone (got ${JSON.stringify(env.STATS_TIMEZONE)})`)
  }
  if (env.ALLOWED_ORIGINS !== undefined) {
    for (const origin of allowedOrigins(env.ALLOWED_ORIGINS)) {
      if (normalizeOrigin(origin) === null) {
        throw new ConfigError(`invalid ALLOWED_ORIGINS: ${JSON.stringify(origin)} is not an http(s) origin like https://app.example.com`)
      }
    }
  }
  return env
}

/** ALLOWED_ORIGINS as a list: comma-separated, blanks ignored. */
export function allowedOrigins (value: string): string[] {
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

/** The bus an environment asks for: BUS, or with BUS=auto Redis when REDIS_URL is set, else PostgreSQL. */
export function busKind (env: Env): 'postgres' | 'redis' | 'memory' {
  if (env.BUS !== 'auto') return env.BUS as 'postgres' | 'redis' | 'memory'
  return env.REDIS_URL !== undefined ? 'redis' : 'postgres'
}
