// Coverage must measure every source file, not just those tests loaded: tap reports 3 statements or fewer for one never measured.
import { readFile, readdir } from 'node:fs/promises'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const summaryPath = join(root, '.tap', 'report', 'coverage-summary.json')
// The dashboard runs in Chromium (its logic, the client SDK, is measured); the others are not the product.
const NOT_MEASURED = new Set(['dashboard/main.ts', 'scripts/smoke-demo.mjs', 'scripts/check-coverage.mjs', 'scripts/run-tests.ts'])
const STRICT = /^(plugins|routes|services)\//

async function sources () {
  const found = (await readdir(root, { withFileTypes: true })).filter(e => e.isFile() && /\.ts$/.test(e.name) && !e.name.endsWith('.d.ts')).map(e => e.name)
  for (const folder of ['plugins', 'routes', 'services', 'db', 'client', 'dashboard', 'scripts']) {
    for (const name of await readdir(join(root, folder), { recursive: true })) {
      if (/\.(ts|mjs)$/.test(name) && !name.endsWith('.d.ts')) found.push(`${folder}/${name}`)
    }
  }
  return found.filter(f => !NOT_MEASURED.has(f)).sort()
}

const summary = await readFile(summaryPath, 'utf8').then(JSON.parse).catch((err) => {
  process.stderr.write(`check-coverage: cannot read ${relative(root, summaryPath)} (run tap with --coverage-report=json-summary): ${err.message}\n`)
  process.exit(1)
})
const reported = new Map(Object.entries(summary)
  .filter(([file]) => file !== 'total')
  .map(([file, figures]) => [relative(root, file), figures.statements.total]))

const problems = []
for (const file of await sources()) {
  const statements = reported.get(file)
  if (statements === undefined) problems.push(`${file}: not in the coverage report (no test process ran it with coverage on)`)
  else if (STRICT.test(file) && statements <= 3) problems.push(`${file}: ${statements} statement(s) counted, so it was never measured`)
}
if (problems.length > 0) {
  process.stderr.write(`check-coverage: the report does not measure every source file:\n  ${problems.join('\n  ')}\n`)
  process.exit(1)
}
const t = summary.total
process.stdout.write(`check-coverage: ok, ${reported.size} files, ${t.statements.total} statements (${t.statements.pct}% covered)\n`)
