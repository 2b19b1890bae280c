import t from 'tap'
import { readFile } from 'node:fs/promises'
import { EnvSchema } from '../config.js'

// The README lists only the settings most deployments touch; the full, generated reference is
// docs/configuration.md (test/docs/configuration.test.ts). What the README does list must be real.

const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8')

/** The text of a `## title` section, up to the next `## ` heading. */
function section (title: string): string {
  const start = readme.indexOf(`\n## ${title}\n`)
  if (start === -1) throw new Error(`README has no section ${title}`)
  const end = readme.indexOf('\n## ', start + 1)
  return readme.slice(start, end === -1 ? undefined : end)
}

const rows = [...section('Common settings').matchAll(/^\| `([A-Z][A-Z0-9_]+)` \| ([^|]+) \|/gm)]
  .map(m => ({ name: m[1] as string, shown: (m[2] as string).trim() }))

t.test('the README\'s common settings are variables the server reads, with their real defaults', async (t) => {
  t.ok(rows.length >= 5, 'a handful of settings')
  for (const { name, shown } of rows) {
    const schema = (EnvSchema.properties as Record<string, { default?: unknown } | undefined>)[name]
    if (schema === undefined) {
      t.fail(`${name} in the README is not read by config.ts`)
      continue
    }
    t.equal(shown, schema.default === undefined ? 'unset' : `\`${String(schema.default)}\``, `${name}: its default`)
  }
})

t.test('the README points to the full reference', async (t) => {
  t.match(section('Common settings'), /\(docs\/configuration\.md\)/)
})
