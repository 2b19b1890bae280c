import t from 'tap'
import { spawn } from 'node:child_process'
import { readdir } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { childRuntime, testDatabase } from '../helper.js'

// `npm run db:migrate` (db/migrate.ts) as an operator runs it: against DATABASE_URL, twice.
const root = fileURLToPath(new URL('../../', import.meta.url))

async function migrateCommand (env: Record<string, string>): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const runtime = childRuntime()
  const child = spawn(process.execPath, [...runtime.execArgv, 'db/migrate.ts'], {
    cwd: root,
    env: { PATH: process.env.PATH ?? '', ...runtime.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const code = await new Promise<number | null>(resolve => child.on('exit', resolve))
  return { code, stdout, stderr }
}

t.test('db:migrate applies the migrations to an empty database, then has nothing to do', async (t) => {
  const db = await testDatabase(t)
  // testDatabase migrates; start from an empty database of the same server instead.
  const empty = `${db.name}_empty`
  await db.pool.query(`CREATE DATABASE ${empty}`)
  const url = new URL(db.url)
  url.pathname = `/${empty}`
  t.teardown(async () => { await db.pool.query(`DROP DATABASE IF EXISTS ${empty} WITH (FORCE)`) })

  const first = await migrateCommand({ DATABASE_URL: url.toString() })
  t.equal(first.code, 0, first.stderr)
  const files = (await readdir(new URL('db/migrations/', `file://${root}`))).filter(f => f.endsWith('.sql')).sort()
  t.equal(first.stdout, `migrations: ${files.length} applied (${files.join(', ')}), 0 already in place\n`)
  const check = new pg.Client({ connectionString: url.toString() })
  await check.connect()
  const { rows } = await check.query<{ n: number }>("SELECT count(*)::int AS n FROM information_schema.tables WHERE table_name IN ('negocios', 'citas')")
  await check.end()
  t.equal(rows[0]?.n, 2, 'negocios and citas exist')

  const again = await migrateCommand({ DATABASE_URL: url.toString() })
  t.equal(again.code, 0)
  t.equal(again.stdout, `migrations: 0 applied, ${files.length} already in place\n`)
})

t.test('db:migrate without DATABASE_URL, or with a bad one, says so in one line and exits 1', async (t) => {
  const missing = await migrateCommand({})
  t.equal(missing.code, 1)
  t.equal(missing.stderr, 'citas-live db:migrate: invalid DATABASE_URL: required by db:migrate\n')
  const bad = await migrateCommand({ DATABASE_URL: 'mysql://x' })
  t.equal(bad.code, 1)
  t.match(bad.stderr, /^citas-live db:migrate: invalid DATABASE_URL: [^\n]*\n$/)
})
