import pg from 'pg'
import { ConfigError, loadEnv } from '../config.js'
import { migrate } from './migrations.js'

// `npm run db:migrate`: applies db/migrations/*.sql to DATABASE_URL. Safe to run again.
try {
  const env = loadEnv(process.env)
  if (env.DATABASE_URL === undefined) throw new ConfigError('invalid DATABASE_URL: required by db:migrate')
  const pool = new pg.Pool({ connectionString: env.DATABASE_URL, max: 1 })
  try {
    const { applied, skipped } = await migrate(pool)
    process.stdout.write(`migrations: ${applied.length} applied${applied.length > 0 ? ` (${applied.join(', ')})` : ''}, ${skipped.length} already in place\n`)
  } finally {
    await pool.end()
  }
} catch (err) {
  process.stderr.write(`citas-live db:migrate: ${(err as Error).message}\n`)
  process.exitCode = 1
}
