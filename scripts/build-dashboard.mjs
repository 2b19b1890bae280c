// Builds the dashboard (dashboard/ + client/) into dist/public, or into the folder given as the
// first argument: one bundled app.js (esbuild), index.html and style.css. Part of `npm run build`.
import { build } from 'esbuild'
import { copyFile, mkdir } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const outdir = resolve(process.argv[2] ?? join(root, 'dist', 'public'))

await mkdir(outdir, { recursive: true })
await build({
  entryPoints: [join(root, 'dashboard', 'main.ts')],
  outfile: join(outdir, 'app.js'),
  bundle: true,
  format: 'esm',
  target: ['es2022'],
  platform: 'browser',
  minify: true,
  sourcemap: true,
  legalComments: 'none',
  logLevel: 'warning'
})
for (const file of ['index.html', 'style.css']) await copyFile(join(root, 'dashboard', file), join(outdir, file))
