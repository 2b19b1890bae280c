import type { Pool } from 'pg'

const DEMO_NEGOCIOS: ReadonlyArray<{ id: string, nombre: string, zona_horaria: string | null }> = [
  { id: 'barberia-centro', nombre: 'Barbería Centro', zona_horaria: 'Europe/Madrid' },
  { id: 'clinica-dental-sol', nombre: 'Clínica Dental Sol', zona_horaria: 'America/Mexico_City' },
  { id: 'spa-luna', nombre: 'Spa Luna', zona_horaria: null }
]

/** Fills an empty database (no negocios) with demo negocios and citas; returns their ids. */
export async function seedDemo (pool: Pool): Promise<string[]> {
  const ids = DEMO_NEGOCIOS.map(n => n.id)
  const { rows } = await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM negocios')
  if ((rows[0]?.n ?? 0) > 0) return ids
  const client = await pool.connect()
  try {
    await client.query('BEGIN')
    for (const [i, n] of DEMO_NEGOCIOS.entries()) {
      await client.query('INSERT INTO negocios (id, nombre, zona_horaria) VALUES ($1, $2, $3)', [n.id, n.nombre, n.zona_horaria])
      // Deterministic spread: days -20..+10 around now, at business hours, states by position.
      await client.query(`
        INSERT INTO citas (negocio_id, fecha_hora, estado)
        SELECT $1, date_trunc('hour', now()) + make_interval(days => (g % 31) - 20, hours => (g * 7) % 9 - 4),
          CASE WHEN (g % 31) - 20 < 0 AND g % 5 = 0 THEN 'cancelada' WHEN (g % 31) - 20 < 0 THEN 'atendida'
            WHEN g % 7 = 0 THEN 'cancelada' WHEN g % 3 = 0 THEN 'confirmada' ELSE 'pendiente' END
        FROM generate_series(1, $2::int) AS g`, [n.id, 40 + i * 25])
      // A few today, whatever the spread above gave.
      await client.query(`
        INSERT INTO citas (negocio_id, fecha_hora, estado)
        SELECT $1, now() + make_interval(mins => g * 20), CASE WHEN g = 1 THEN 'atendida' ELSE 'confirmada' END
        FROM generate_series(1, 3) AS g`, [n.id])
    }
    await client.query('COMMIT')
  } catch (err) {
    await client.query('ROLLBACK')
    throw err
  } finally {
    client.release()
  }
  return ids
}

/** A change every 3 s on average, written straight to the database as another service would: change capture pushes it. */
export function startDemoActivity (pool: Pool, negocios: readonly string[], onError: (err: unknown) => void) {
  let timer: NodeJS.Timeout | undefined
  let stopped = false
  const statements = [
    "INSERT INTO citas (negocio_id, fecha_hora, estado) VALUES ($1, now() + make_interval(mins => (random() * 600)::int), 'pendiente')",
    "UPDATE citas SET estado = 'atendida' WHERE id = (SELECT id FROM citas WHERE negocio_id = $1 AND estado IN ('pendiente', 'confirmada') ORDER BY fecha_hora LIMIT 1)",
    "UPDATE citas SET estado = 'cancelada' WHERE id = (SELECT id FROM citas WHERE negocio_id = $1 AND estado IN ('pendiente', 'confirmada') ORDER BY fecha_hora DESC LIMIT 1)"
  ]
  const tick = (): void => {
    if (stopped || negocios.length === 0) return
    const negocio = negocios[Math.floor(Math.random() * negocios.length)] as string
    const sql = statements[Math.floor(Math.random() * statements.length)] as string
    pool.query(sql, [negocio]).catch(onError).finally(schedule)
  }
  const schedule = (): void => {
    if (stopped) return
    timer = setTimeout(tick, 3000 * (0.5 + Math.random())).unref()
  }
  schedule()
  return {
    stop (): void {
      stopped = true
      clearTimeout(timer)
    }
  }
}
