// `npm run docs:config`: docs/configuration.md from the option schemas, so it cannot drift from what the code reads and checks
// (test/docs/configuration.test.ts compares). A plugin variable (PLUGIN_ENV) shows its option's description, default and bounds.
import { writeFileSync } from 'node:fs'
import { fileURLToPath, pathToFileURL } from 'node:url'
import type { TObject, TSchema } from '@sinclair/typebox'
import { EnvSchema, PLUGIN_ENV, SCHEMAS } from '../config.js'
import { DbMonitorOptions } from '../plugins/db-monitor.js'
import { optionSchema } from '../plugins/options.js'

export const OUTPUT = fileURLToPath(new URL('../docs/configuration.md', import.meta.url))

/** The option schemas in the order an embedder meets them: key in AppOptions, schema, what it is for. */
const PARTS: Array<[string, TObject, string]> = [
  ['app', SCHEMAS.app, 'The app plugin\'s own options (top level of `AppOptions`)'],
  ['db', SCHEMAS.db, '`db`: the database pool'],
  ['auth', SCHEMAS.auth, '`auth`: tokens and who may watch what'],
  ['stats', SCHEMAS.stats, '`stats`: the stats query'],
  ['hub', SCHEMAS.hub, '`hub`: connections and what they are sent'],
  ['live', SCHEMAS.live, '`live`: freshness, the bus between instances, change capture'],
  ['limits', SCHEMAS.limits, '`limits`: origins, connection and message limits, the notify rate'],
  ['expiry', SCHEMAS.expiry, '`expiry`: tokens that expire on open connections'],
  ['dbMonitor', DbMonitorOptions, '`dbMonitor`: database outages and readiness'],
  ['metrics', SCHEMAS.metrics, '`metrics`: Prometheus metrics (`false`: not even collected)']
]

/** A markdown table cell: no line breaks, no column separators. */
function cell (text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').replace(/\|/g, '\\|').trim()
}

function sentence (text: string): string {
  const trimmed = text.trim()
  return trimmed === '' || /[.!?)]$/.test(trimmed) ? trimmed : `${trimmed}.`
}

/** The values a schema accepts, as a short sentence (empty when the type says it all). */
export function constraints (schema: TSchema, asEnv: boolean): string {
  const literals = (schema.anyOf as TSchema[] | undefined)?.map(s => s.const as unknown)
  if (literals !== undefined && literals.every(v => typeof v === 'string')) {
    return `One of ${literals.map(v => `\`${String(v)}\``).join(', ')}.`
  }
  if (typeof schema.errorMessage === 'string') return `${schema.errorMessage.charAt(0).toUpperCase()}${schema.errorMessage.slice(1)}.`
  if (schema.anyOf !== undefined) {
    // live.session: a URL or an object of connection settings.
    const text = (schema.anyOf as TSchema[]).find(s => s.type === 'string')
    return text === undefined ? '' : `${constraints(text, asEnv).replace(/\.$/, '')}, or an object of settings.`
  }
  const parts: string[] = []
  if (schema.type === 'integer' || schema.type === 'number') {
    const kind = schema.type === 'integer' ? 'An integer' : 'A number'
    const { minimum: low, maximum: high } = schema
    if (low !== undefined && high !== undefined) parts.push(`${kind} from ${low} to ${high}`)
    else if (low !== undefined) parts.push(`${kind}, at least ${low}`)
    else if (schema.exclusiveMinimum !== undefined) parts.push(`${kind} above ${schema.exclusiveMinimum}${high !== undefined ? `, at most ${high}` : ''}`)
    else parts.push(kind)
  } else if (schema.type === 'string') {
    if (schema.format === 'iana-time-zone') parts.push('An IANA time zone (like `Europe/Madrid`)')
    if (schema.pattern !== undefined) parts.push(`Matches \`${String(schema.pattern)}\``)
    if (typeof schema.minLength === 'number' && schema.minLength > 1) parts.push(`At least ${schema.minLength} characters`)
    if (typeof schema.maxLength === 'number') parts.push(`At most ${schema.maxLength} characters`)
  } else if (schema.type === 'array') {
    parts.push(asEnv ? 'A comma list' : 'A list of strings')
  }
  return parts.length === 0 ? '' : `${parts.join('; ')}.`
}

/** A default as an environment variable (`asEnv`) or a JavaScript option shows it. */
function defaultCell (schema: TSchema, asEnv: boolean): string {
  if (schema.default === undefined) return 'unset'
  return `\`${asEnv ? String(schema.default) : JSON.stringify(schema.default)}\``
}

function envRows (): string[] {
  return (Object.entries(EnvSchema.properties) as Array<[string, TSchema]>).map(([name, schema]) => {
    const mapped = (PLUGIN_ENV as Record<string, readonly [string, string] | undefined>)[name]
    // A plugin variable: the option's description; the environment's own schema for the values.
    const option = mapped === undefined ? undefined : optionSchema(SCHEMAS[mapped[0] as keyof typeof SCHEMAS], mapped[1])
    const description = String((option ?? schema).description ?? '')
    const values = option?.type === 'boolean' ? 'One of `on`, `off`.' : constraints(option?.type === 'array' ? option : schema, true)
    // The option as an embedder writes it in AppOptions.
    const sets = mapped === undefined ? '' : `Sets \`${mapped[0] === 'app' ? '' : `${mapped[0]}.`}${mapped[1]}\`.`
    const meaning = [sentence(description), values, sets].filter(s => s !== '').join(' ')
    return `| \`${name}\` | ${defaultCell(schema, true)} | ${cell(meaning)} |`
  })
}

/** One row per option; nested objects (auth.claims) are flattened to dotted names. */
function optionRows (part: string, schema: TObject, prefix = ''): string[] {
  return (Object.entries(schema.properties) as Array<[string, TSchema]>).flatMap(([key, option]) => {
    const path = `${prefix}${key}`
    if (option.type === 'object' && option.properties !== undefined && Object.keys(option.properties as object).length > 0) {
      return optionRows(part, option as TObject, `${path}.`)
    }
    const meaning = [sentence(String(option.description ?? '')), constraints(option, false)].filter(s => s !== '').join(' ')
    const variables = Object.entries(PLUGIN_ENV).filter(([, set]) => set[0] === part && set[1] === path).map(([name]) => `\`${name}\``).join(', ')
    return [`| \`${path}\` | ${defaultCell(option, false)} | ${cell(meaning)} | ${variables} |`]
  })
}

/** docs/configuration.md, as `npm run docs:config` writes it. */
export function renderConfiguration (): string {
  const lines = [
    '# Configuration',
    '',
    '<!-- Generated by `npm run docs:config` (scripts/config-doc.ts) from the option schemas in config.ts,',
    '     app.ts and plugins/. Do not edit: change a schema\'s description and run it again. -->',
    '',
    'The server (`npm start`, `server.ts`) reads its settings from the environment and nowhere else. Every',
    'variable is checked at start: a bad value stops the process with one line naming it',
    '(`citas-live: invalid PORT: ...`). An empty value counts as unset. Besides each variable\'s own',
    'bounds: `JWT_SECRET` is required when `DATABASE_URL` is set, `BUS=redis` needs `REDIS_URL`,',
    '`ALLOWED_ORIGINS` holds http(s) origins such as `https://app.example.com`, and',
    '`NOTIFY_TRUSTED_NETWORKS` and `TRUST_PROXY` hold addresses or CIDRs.',
    '',
    'Most deployments set a handful of these (the README has a short table); limits, what is logged and',
    'how to rotate `JWT_SECRET` are in [SECURITY.md](../SECURITY.md).',
    '',
    '- [Environment variables](#environment-variables)',
    '- [Options of the app plugin](#options-of-the-app-plugin), for an app that embeds citas-live',
    '',
    '## Environment variables',
    '',
    'A variable that "sets" an option passes its value to that option of the app plugin (below), which',
    'holds its default and bounds.',
    '',
    '| Variable | Default | Meaning |',
    '| --- | --- | --- |',
    ...envRows(),
    '',
    '## Options of the app plugin',
    '',
    'An app that registers citas-live itself ([embedding.md](embedding.md)) passes these instead of',
    'environment variables; `server.ts` builds them from the variables above. It also sets',
    '`db.connectionString` from `DATABASE_URL`, `auth.secret` from `JWT_SECRET`, `live.bus` from `BUS`,',
    '`limits.trustedProxies` from `TRUST_PROXY` and `hub.closeTimeoutMs` to half of `SHUTDOWN_GRACE_MS`.',
    'Each plugin checks its options at boot: an unknown or out-of-range one stops the registration with',
    'one line naming it. Options that are not plain data (`db.pool`, `auth.verify`, a `live.session`',
    'object, `dashboard`, `openapi`, `decorator`) are described in [embedding.md](embedding.md).',
    ''
  ]
  for (const [part, schema, title] of PARTS) {
    lines.push(`### ${title}`, '', '| Option | Default | Meaning | Variable |', '| --- | --- | --- | --- |')
    lines.push(...optionRows(part, schema), '')
  }
  return lines.join('\n')
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  writeFileSync(OUTPUT, renderConfiguration())
  process.stdout.write(`wrote ${OUTPUT}\n`)
}
