import { readdir, readFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { Pool } from 'pg'

// Same key for every process, so two servers starting at once never migrate concurrently.
const LOCK_KEY = 7_410_226_001

/** The folder of numbered .sql files, next to the sources or next to the compiled output. */
export function migrationsDir (): string {
  for (const rel of ['./migrations/', '../../db/migrations/']) {
    const dir = fileURLToPath(new URL(rel, import.meta.url))
    if (existsSync(dir)) return dir
  }
  throw new Error('db/migrations folder not found')
}

/** Applies each NNN_name.sql not yet in citas_live_migrations, in order, one transaction each, under an advisory lock. */
export async function migrate (pool: Pool, dir = migrationsDir()): Promise<{ applied: string[], skipped: string[] }> {
  const files = (await readdir(dir)).filter(f => /^\d+_[\w-]+\.sql$/.test(f)).sort()
  const client = await pool.connect()
  const result = { applied: [] as string[], skipped: [] as string[] }
  try {
    await client.query('SELECT pg_advisory_lock($1)', [LOCK_KEY])
    await client.query('CREATE TABLE IF NOT EXISTS citas_live_migrations (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())')
    const { rows } = await client.query<{ version: string }>('SELECT version FROM citas_live_migrations')
    const done = new Set(rows.map(r => r.version))
    for (const file of files) {
      if (done.has(file)) {
        result.skipped.push(file)
        continue
      }
      const sql = await readFile(`${dir}/${file}`, 'utf8')
      await client.query('BEGIN')
      try {
        await client.query(sql)
        await client.query('INSERT INTO citas_live_migrations (version) VALUES ($1)', [file])
        await client.query('COMMIT')
      } catch (err) {
        await client.query('ROLLBACK')
        throw new Error(`migration ${file} failed: ${(err as Error).message}`, { cause: err })
      }
      result.applied.push(file)
    }
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [LOCK_KEY]).catch(() => {})
    client.release()
  }
  return result
}
