import t from 'tap'
import { readFile } from 'node:fs/promises'
import { EnvSchema, PLUGIN_ENV } from '../../config.js'
import { constraints, OUTPUT, renderConfiguration } from '../../scripts/config-doc.js'

// docs/configuration.md is generated from the option schemas: a schema changed without running the
// generator, or a hand edit of the file, fails here.

const committed = await readFile(OUTPUT, 'utf8')

t.test('docs/configuration.md is what the schemas render', async (t) => {
  const rendered = renderConfiguration()
  if (rendered !== committed) {
    const a = rendered.split('\n')
    const b = committed.split('\n')
    const line = a.findIndex((l, i) => l !== b[i])
    t.fail(`docs/configuration.md is out of date (first difference at line ${line + 1}): run npm run docs:config`, {
      expected: a[line], found: b[line]
    })
  } else {
    t.pass('up to date')
  }
})

/** The rows of the environment table: name -> default cell. */
function envTable (text: string): Map<string, string> {
  const start = text.indexOf('## Environment variables')
  const end = text.indexOf('\n## ', start + 1)
  const section = text.slice(start, end === -1 ? undefined : end)
  return new Map([...section.matchAll(/^\| `([A-Z][A-Z0-9_]+)` \| ([^|]+) \|/gm)].map(m => [m[1] as string, (m[2] as string).trim()]))
}

t.test('the environment table has every variable the server reads, and no other', async (t) => {
  const documented = envTable(committed)
  for (const key of Object.keys(EnvSchema.properties)) t.ok(documented.has(key), `${key} is in docs/configuration.md`)
  for (const key of documented.keys()) t.ok(key in EnvSchema.properties, `${key} in docs/configuration.md is read by config.ts`)
})

t.test('each variable\'s default is its schema\'s (the plugin option\'s, for plugin variables)', async (t) => {
  const documented = envTable(committed)
  for (const [key, schema] of Object.entries(EnvSchema.properties)) {
    const def = (schema as { default?: unknown }).default
    t.equal(documented.get(key), def === undefined ? 'unset' : `\`${String(def)}\``, key)
  }
})

t.test('every process variable and every option has a description', async (t) => {
  t.notMatch(committed, /^\| `[^`]+` \| [^|]+ \| \|/m, 'no row with an empty meaning')
  for (const [key, schema] of Object.entries(EnvSchema.properties)) {
    if (key in PLUGIN_ENV) continue // described by its plugin option
    t.type((schema as { description?: unknown }).description, 'string', `${key} has a description in EnvSchema`)
  }
})

t.test('the values a schema accepts, in words', async (t) => {
  t.equal(constraints({ type: 'integer', minimum: 0, maximum: 9 } as never, true), 'An integer from 0 to 9.')
  t.equal(constraints({ type: 'integer', minimum: 100 } as never, true), 'An integer, at least 100.')
  t.equal(constraints({ type: 'number', exclusiveMinimum: 0, maximum: 5 } as never, true), 'A number above 0, at most 5.')
  t.equal(constraints({ type: 'integer' } as never, true), 'An integer.')
  t.equal(constraints({ type: 'array' } as never, true), 'A comma list.')
  t.equal(constraints({ type: 'array' } as never, false), 'A list of strings.')
  t.equal(constraints({ type: 'boolean' } as never, false), '')
  t.equal(constraints({ anyOf: [{ const: 'a' }, { const: 'b' }] } as never, true), 'One of `a`, `b`.')
  t.equal(constraints({ anyOf: [{ type: 'object' }] } as never, true), '')
  t.equal(constraints({ type: 'string', minLength: 1, maxLength: 8 } as never, true), 'At most 8 characters.')
})
