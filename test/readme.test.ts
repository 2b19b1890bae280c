import t from 'tap'
import { readFile } from 'node:fs/promises'
import { EnvSchema } from '../config.js'

t.test('the README documents every environment variable the server reads, and no other', async (t) => {
  const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8')
  const documented = new Set([...readme.matchAll(/^\| `([A-Z][A-Z0-9_]+)` \|/gm)].map(m => m[1]))
  for (const key of Object.keys(EnvSchema.properties)) t.ok(documented.has(key), `${key} is in the README's table`)
  for (const key of documented) t.ok(key !== undefined && key in EnvSchema.properties, `${key} in the README is read by config.ts`)
})

t.test('the README states each variable\'s default as its schema does (the plugin\'s, for plugin options)', async (t) => {
  const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8')
  const defaults = new Map([...readme.matchAll(/^\| `([A-Z][A-Z0-9_]+)` \| ([^|]+) \|/gm)].map(m => [m[1], (m[2] as string).trim()]))
  for (const [key, schema] of Object.entries(EnvSchema.properties)) {
    const def = (schema as { default?: unknown }).default
    if (def === undefined) continue
    t.equal(defaults.get(key), `\`${String(def)}\``, key)
  }
})
