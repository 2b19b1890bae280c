import { Type, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { isValidTimeZone } from './services/stats.js'

/**
 * Every environment variable the server reads. Nothing else in the code base touches process.env:
 * server.ts turns the validated result into plain options for app.ts.
 */
export const EnvSchema = Type.Object({
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 8080 }),
  HOST: Type.String({ minLength: 1, default: '0.0.0.0' }),
  DATABASE_URL: Type.Optional(Type.String({ pattern: '^postgres(ql)?://' })),
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
  CHANGE_CAPTURE: Type.Union([Type.Literal('on'), Type.Literal('off')], { default: 'on' }),
  STATS_COALESCE_MS: Type.Integer({ minimum: 0, maximum: 60_000, default: 100 }),
  STATS_RECONCILE_SECONDS: Type.Integer({ minimum: 0, maximum: 86_400, default: 0 }),
  DEMO_ACTIVITY: Type.Union([Type.Literal('on'), Type.Literal('off')], { default: 'on' }),
  METRICS_TOKEN: Type.Optional(Type.String({ minLength: 16 })),
  METRICS_PORT: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
  METRICS_HOST: Type.String({ minLength: 1, default: '127.0.0.1' }),
  EMBEDDED_PG_PORT: Type.Integer({ minimum: 1, maximum: 65535, default: 54329 }),
  EMBEDDED_PG_DIR: Type.String({ minLength: 1, default: '.data/postgres' })
})
export type Env = Static<typeof EnvSchema>

export class ConfigError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'ConfigError'
  }
}

const integerKeys = new Set(['PORT', 'EMBEDDED_PG_PORT', 'METRICS_PORT', 'STATS_COALESCE_MS', 'STATS_RECONCILE_SECONDS'])

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
  return env
}

function redactValue (name: string, value: unknown): unknown {
  if (name === 'JWT_SECRET' || name === 'METRICS_TOKEN') return '<redacted>'
  if (name === 'DATABASE_URL' && typeof value === 'string') return value.replace(/\/\/([^@/]*)@/, '//<redacted>@')
  return value
}

/** The bus an environment asks for: BUS, or with BUS=auto Redis when REDIS_URL is set, else PostgreSQL. */
export function busKind (env: Env): 'postgres' | 'redis' | 'memory' {
  if (env.BUS !== 'auto') return env.BUS as 'postgres' | 'redis' | 'memory'
  return env.REDIS_URL !== undefined ? 'redis' : 'postgres'
}
