import { FormatRegistry, Type, type Static, type TObject, type TSchema } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { isValidTimeZone } from '../services/live/stats.js'

if (!FormatRegistry.Has('iana-time-zone')) FormatRegistry.Set('iana-time-zone', isValidTimeZone)

export const Int = (min: number, def: number, extra: { maximum?: number, description?: string } = {}) =>
  Type.Integer({ minimum: min, default: def, ...extra })

/** A plugin's options, defaults filled in, checked at boot; `extra`: options outside the schema (any other is an error: no silent typo). */
export function resolveOptions<T extends TObject> (plugin: string, schema: T, opts: object | undefined, extra: readonly string[] = []): Static<T> {
  const own: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(opts ?? {})) {
    if (key in schema.properties) {
      if (value !== undefined) own[key] = value
    } else if (!extra.includes(key)) {
      throw new Error(`citas-live ${plugin} plugin: unknown option ${key}`)
    }
  }
  const value = Value.Default(schema, Value.Clone(own))
  const first = Value.Errors(schema, value).First()
  if (first !== undefined) {
    const name = first.path.replace(/^\//, '').replaceAll('/', '.')
    throw new Error(`citas-live ${plugin} plugin: invalid option ${name}: ${describe(first.schema, first.message)}`)
  }
  return value as Static<T>
}

/** What `make` builds from an option its schema cannot check fully; its error, like resolveOptions', names the plugin and the option. */
export function fromOption<T> (plugin: string, option: string, make: () => T): T {
  try {
    return make()
  } catch (err) {
    throw new Error(`citas-live ${plugin} plugin: invalid option ${option}: ${(err as Error).message}`)
  }
}

/** TypeBox's message, made plain for the formats and patterns people meet most. */
export function describe (schema: TSchema, message: string): string {
  if (schema.format === 'iana-time-zone') return 'not an IANA time zone (like Europe/Madrid)'
  return schema.errorMessage !== undefined ? String(schema.errorMessage) : message
}

/** The schema of one option (dotted path into nested objects), for config.ts to check environment values with. */
export function optionSchema (schema: TObject, path: string): TSchema {
  let at: TSchema = schema
  for (const key of path.split('.')) {
    const next = (at as TObject).properties?.[key]
    if (next === undefined) throw new Error(`no option ${path}`)
    at = next
  }
  return at
}
