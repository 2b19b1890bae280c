import t from 'tap'
import { execFile } from 'node:child_process'
import { appendFile, cp, mkdir, mkdtemp, readFile, rm, stat, symlink } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

// `npm start` runs `npm run build` first (prestart). On a tree that is already built it must not
// rebuild anything, so a restart is quick; a changed source must still be rebuilt.
const exec = promisify(execFile)
const root = fileURLToPath(new URL('../../', import.meta.url))
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'
t.setTimeout(300_000)

/** A copy of the checkout (tracked files only) with the real node_modules, in a folder of its own. */
async function checkout (): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'citas-live-start-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const { stdout } = await exec('git', ['ls-files', '--cached', '--others', '--exclude-standard'], { cwd: root })
  for (const rel of stdout.split('\n').filter(Boolean)) {
    if (!existsSync(join(root, rel))) continue
    await mkdir(dirname(join(dir, rel)), { recursive: true })
    await cp(join(root, rel), join(dir, rel))
  }
  await symlink(join(root, 'node_modules'), join(dir, 'node_modules'), 'dir')
  return dir
}

const build = async (dir: string): Promise<void> => { await exec(npm, ['run', 'build', '--silent'], { cwd: dir, maxBuffer: 16 << 20 }) }
const mtimes = async (dir: string, files: string[]): Promise<number[]> =>
  await Promise.all(files.map(async f => (await stat(join(dir, f))).mtimeMs))

t.test('npm start builds first, skips what is up to date and rebuilds what changed', async (t) => {
  const manifest = JSON.parse(await readFile(join(root, 'package.json'), 'utf8'))
  t.match(manifest.scripts.prestart, /npm run build/, 'npm start runs the build first')

  const dir = await checkout()
  await build(dir)
  const outputs = ['dist/server.js', 'dist/services/live/hub.js', 'dist/public/app.js', 'dist/public/style.css']
  for (const f of outputs) t.ok(existsSync(join(dir, f)), `the first build makes ${f}`)

  const before = await mtimes(dir, outputs)
  await build(dir)
  t.same(await mtimes(dir, outputs), before, 'a second build with nothing changed rewrites nothing')

  await appendFile(join(dir, 'services/live/hub.ts'), '\nexport const rebuiltMarker = 1\n')
  await appendFile(join(dir, 'dashboard/style.css'), '\n.rebuilt-marker { color: red }\n')
  await appendFile(join(dir, 'client/backoff.ts'), '\n;(globalThis as Record<string, unknown>).citasMarker = \'client-rebuilt-marker\'\n')
  await build(dir)
  t.match(await readFile(join(dir, 'dist/services/live/hub.js'), 'utf8'), /rebuiltMarker/, 'a changed server source is recompiled')
  t.match(await readFile(join(dir, 'dist/public/style.css'), 'utf8'), /rebuilt-marker/, 'a changed dashboard file is copied again')
  t.match(await readFile(join(dir, 'dist/public/app.js'), 'utf8'), /client-rebuilt-marker/, 'a changed client source is bundled again')
})
