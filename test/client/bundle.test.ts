import t from 'tap'
import { readFile } from 'node:fs/promises'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

// The SDK shares the protocol module with the server; the browser bundle must gain nothing else.

const root = fileURLToPath(new URL('../../', import.meta.url))

/** The source files a browser bundle of `entry` is made of, relative to the repository. */
async function bundleInputs (entry: string): Promise<string[]> {
  const result = await build({
    entryPoints: [join(root, entry)],
    bundle: true,
    write: false,
    metafile: true,
    format: 'esm',
    platform: 'browser',
    target: ['es2022'],
    logLevel: 'silent'
  })
  return Object.keys(result.metafile.inputs).map(p => relative(root, join(root, p)).replaceAll('\\', '/')).sort()
}

t.test('protocol.ts imports nothing: whoever imports it gets nothing else', async (t) => {
  const text = await readFile(join(root, 'protocol.ts'), 'utf8')
  t.same(text.match(/^\s*(import|export .* from)\b.*$/gm) ?? [], [], 'no import, no re-export')
  t.notMatch(text, /\brequire\(|\bimport\(/, 'no dynamic import')
})

t.test('the client SDK bundle is client/ and protocol.ts only', async (t) => {
  const inputs = await bundleInputs('client/index.ts')
  t.ok(inputs.includes('protocol.ts'), 'it uses the protocol module')
  t.same(inputs.filter(p => !(p === 'protocol.ts' || /^client\/[\w-]+\.ts$/.test(p))), [], `nothing else: ${inputs.join(', ')}`)
})

t.test('the dashboard bundle is dashboard/, client/ and protocol.ts only', async (t) => {
  const inputs = await bundleInputs('dashboard/main.ts')
  t.same(inputs.filter(p => !(p === 'protocol.ts' || /^(client|dashboard)\/[\w-]+\.ts$/.test(p))), [], `nothing else: ${inputs.join(', ')}`)
})
