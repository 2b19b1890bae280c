import t from 'tap'
import { readFile } from 'node:fs/promises'

// The metrics table of docs/operations.md against the metrics plugins/metrics.ts registers.

const source = await readFile(new URL('../../plugins/metrics.ts', import.meta.url), 'utf8')
const doc = await readFile(new URL('../../docs/operations.md', import.meta.url), 'utf8')

t.test('docs/operations.md lists every metric the server registers, and no other', async (t) => {
  const registered = new Set([...source.matchAll(/(?:name: |counterFrom\(|gaugeOf\()'(citas_live_[a-z_]+)'/g)].map(m => m[1] as string))
  const section = doc.slice(doc.indexOf('\n## Metrics\n'), doc.indexOf('\n## Logs\n'))
  const documented = new Set([...section.matchAll(/^\| `(citas_live_[a-z_]+)(?:\{[^}]*\})?` \|/gm)].map(m => m[1] as string))
  t.ok(registered.size >= 15, `${registered.size} metrics found in plugins/metrics.ts`)
  t.same([...documented].sort(), [...registered].sort())
})
