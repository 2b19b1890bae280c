import pg from 'pg'
import { migrate } from '../db/migrations.js'
import { STATS_SQL } from '../services/live/stats.js'
import { now, percentiles } from './lib.js'

export const negocioId = (i: number): string => `n${String(i).padStart(4, '0')}`

export function withDatabase (url: string, database: string): string {
  const u = new URL(url)
  u.pathname = `/${database}`
  return u.toString()
}

/** A fresh, migrated database with `negocios` businesses and `citas` appointments spread evenly over them. */
export async function createBenchDatabase (adminUrl: string, name: string, negocios: number, citas: number): Promise<string> {
  const admin = new pg.Client({ connectionString: adminUrl })
  await admin.connect()
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    await admin.query(`CREATE DATABASE ${name}`)
  } finally {
    await admin.end()
  }
  const url = withDatabase(adminUrl, name)
  const pool = new pg.Pool({ connectionString: url, max: 1 })
  try {
    await migrate(pool)
    const client = await pool.connect()
    try {
      // Seeding is not a change dashboards need to hear about: skip the change-capture trigger.
      await client.query('SET session_replication_role = replica')
      await client.query(`INSERT INTO negocios (id, nombre)
        SELECT 'n' || lpad(i::text, 4, '0'), 'Negocio ' || i FROM generate_series(0, $1::int - 1) i`, [negocios])
      await client.query(`INSERT INTO citas (negocio_id, fecha_hora, estado)
        SELECT 'n' || lpad((i % $1::int)::text, 4, '0'),
               now() - (i % 2000) * interval '1 hour' + interval '500 hours',
               (ARRAY['pendiente', 'confirmada', 'atendida', 'cancelada'])[1 + (i / $1::int) % 4]
        FROM generate_series(0, $2::int - 1) i`, [negocios, citas])
      await client.query('SET session_replication_role = origin')
      // Sets the visibility map, so the stats query can be an index-only scan.
      await client.query('VACUUM ANALYZE citas')
      await client.query('VACUUM ANALYZE negocios')
    } finally {
      client.release()
    }
  } finally {
    await pool.end()
  }
  return url
}

/** The user triggers on `citas` (not the foreign key's internal ones), by name. */
export async function citasTriggers (url: string): Promise<string[]> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    const { rows } = await client.query<{ tgname: string }>(
      "SELECT tgname FROM pg_trigger WHERE tgrelid = 'citas'::regclass AND NOT tgisinternal ORDER BY tgname")
    return rows.map((r) => r.tgname)
  } finally {
    await client.end()
  }
}

/**
 * Drops every user trigger on `citas` (pg_trigger rows that are not internal, so not the foreign
 * key's), whatever the migrations named them, and returns their names. What is left is the bare
 * table, its indexes and its foreign key: a database with no change capture.
 */
export async function dropCitasTriggers (url: string): Promise<string[]> {
  const names = await citasTriggers(url)
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    for (const name of names) await client.query(`DROP TRIGGER ${client.escapeIdentifier(name)} ON citas`)
    return names
  } finally {
    await client.end()
  }
}

export async function dropBenchDatabase (adminUrl: string, name: string): Promise<void> {
  const admin = new pg.Client({ connectionString: adminUrl })
  await admin.connect()
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
  } finally {
    await admin.end()
  }
}

/** The stats query's own cost, without any server: its plan and its time from a client on loopback. */
export async function statsQueryReport (pool: pg.Pool, negocios: number, runs: number): Promise<{ plan: string, times: ReturnType<typeof percentiles> & { mean: number }, rowsPerNegocio: number }> {
  const args = (i: number): unknown[] => [[negocioId(i % negocios)], 'UTC', new Date().toISOString()]
  const explain = await pool.query(`EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) ${STATS_SQL}`, args(0))
  const plan = explain.rows.map((r: Record<string, string>) => r['QUERY PLAN']).join('\n')
  const { rows } = await pool.query('SELECT count(*)::int AS n FROM citas WHERE negocio_id = $1', [negocioId(0)])
  for (let i = 0; i < 50; i++) await pool.query(STATS_SQL, args(i))
  const times: number[] = []
  for (let i = 0; i < runs; i++) {
    const t = now()
    await pool.query(STATS_SQL, args(i))
    times.push(now() - t)
  }
  const mean = times.reduce((a, b) => a + b, 0) / times.length
  return { plan, times: { ...percentiles(times), mean }, rowsPerNegocio: (rows[0] as { n: number }).n }
}
