// Bundles the dashboard into dist/public (or the folder given); skipped on an unchanged inputs hash, so a built `npm start` is quick.
import { build } from 'esbuild'
import { copyFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { createHash } from 'node:crypto'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const args = process.argv.slice(2)
const force = args.includes('--force')
const outdir = resolve(args.find(a => a !== '--force') ?? join(root, 'dist', 'public'))
const stampFile = join(outdir, '.build-hash')

async function inputsHash () {
  const hash = createHash('sha256')
  const { version } = JSON.parse(await readFile(join(root, 'node_modules', 'esbuild', 'package.json'), 'utf8'))
  hash.update(`esbuild ${version}\n`)
  hash.update(await readFile(fileURLToPath(import.meta.url)))
  const files = []
  for (const folder of ['dashboard', 'client']) files.push(...(await readdir(join(root, folder))).sort().map(name => `${folder}/${name}`))
  for (const file of [...files, 'protocol.ts']) {
    hash.update(`${file}\n`)
    hash.update(await readFile(join(root, file)))
  }
  return hash.digest('hex')
}

const wanted = await inputsHash()
const built = await readFile(stampFile, 'utf8').catch(() => '')
if (!force && built.trim() === wanted) process.exit(0)

await mkdir(outdir, { recursive: true })
await build({
  entryPoints: [join(root, 'dashboard', 'main.ts')], outfile: join(outdir, 'app.js'), bundle: true, format: 'esm', target: ['es2022'],
  platform: 'browser', minify: true, sourcemap: true, legalComments: 'none', logLevel: 'warning'
})
for (const file of ['index.html', 'style.css']) await copyFile(join(root, 'dashboard', file), join(outdir, file))
await writeFile(stampFile, wanted + '\n')
