import t from 'tap'
import { readdir, readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { dirname, join, relative, resolve } from 'node:path'

// The tree shows the design (docs/architecture.md): folders by concern, small files, and imports
// that only go one way, types included.
const root = fileURLToPath(new URL('../', import.meta.url))
const SOURCE_DIRS = ['.', 'plugins', 'routes', 'services', 'db', 'client', 'dashboard']

async function sources (): Promise<string[]> {
  const found: string[] = []
  for (const dir of SOURCE_DIRS) {
    const entries = await readdir(join(root, dir), { recursive: dir !== '.', withFileTypes: true })
    for (const e of entries) {
      if (e.isFile() && /\.ts$/.test(e.name) && !e.name.endsWith('.d.ts')) found.push(relative(root, join(e.parentPath, e.name)))
    }
  }
  return found.sort()
}

const files = await sources()
const text = new Map(await Promise.all(files.map(async (f) => [f, await readFile(join(root, f), 'utf8')] as const)))

/** Relative imports and re-exports of a file, `import type` included, as repository paths. */
function importsOf (file: string): string[] {
  const out: string[] = []
  for (const m of (text.get(file) ?? '').matchAll(/^\s*(?:import|export)\s[^'"]*?from\s+'(\.[^']+)'/gm)) {
    const target = relative(root, resolve(root, dirname(file), m[1] ?? '')).replace(/\.js$/, '.ts')
    if (text.has(target)) out.push(target)
  }
  return out
}

t.test('no import cycle among the source files, type imports included', async (t) => {
  const graph = new Map(files.map((f) => [f, importsOf(f)]))
  t.ok([...graph.values()].some((deps) => deps.length > 0), 'imports were found')
  const state = new Map<string, 'open' | 'done'>()
  const cycles: string[] = []
  const visit = (file: string, path: string[]): void => {
    if (state.get(file) === 'done') return
    if (state.get(file) === 'open') {
      cycles.push([...path.slice(path.indexOf(file)), file].join(' -> '))
      return
    }
    state.set(file, 'open')
    for (const dep of graph.get(file) ?? []) visit(dep, [...path, file])
    state.set(file, 'done')
  }
  for (const file of files) visit(file, [])
  t.same(cycles, [], 'every import goes one way')
})

t.test('no source file is much longer than 400 lines, no folder holds much more than 12', async (t) => {
  const long = files.filter((f) => (text.get(f) ?? '').split('\n').length > 430)
  t.same(long, [], 'files over 430 lines')
  const perFolder = new Map<string, number>()
  for (const f of files) perFolder.set(dirname(f), (perFolder.get(dirname(f)) ?? 0) + 1)
  const crowded = [...perFolder].filter(([dir, n]) => dir !== '.' && n > 13)
  t.same(crowded, [], 'folders with more than 13 source files')
})
