import t from 'tap'
import { createStatsService, SOLO_CITAS, STATS_SQL } from '../../services/live/stats.js'
import { addCita, addNegocio, testDatabase, waitFor } from '../helper.js'

t.test('figures equal the rows in the database', async (t) => {
  const { pool } = await testDatabase(t)
  const now = new Date('2026-05-20T12:00:00Z')
  const stats = createStatsService(pool, { now: () => now })
  await addNegocio(pool, 'n1')
  await addNegocio(pool, 'other')
  await addCita(pool, 'n1', '2026-05-20T09:00:00Z', 'atendida')
  await addCita(pool, 'n1', '2026-05-20T18:00:00Z', 'pendiente')
  await addCita(pool, 'n1', '2026-05-19T09:00:00Z', 'cancelada')
  await addCita(pool, 'n1', '2026-05-21T09:00:00Z', 'confirmada')
  await addCita(pool, 'n1', '2026-04-01T09:00:00Z', 'atendida')
  await addCita(pool, 'other', '2026-05-20T10:00:00Z', 'atendida')

  t.same(await stats.compute('n1'), {
    negocio_id: 'n1',
    citas_hoy: 2,
    total_citas: 5,
    citas_completadas: 2,
    citas_canceladas: 1,
    timestamp: Math.floor(now.getTime() / 1000)
  })
  t.same(await stats.compute('other'), {
    negocio_id: 'other', citas_hoy: 1, total_citas: 1, citas_completadas: 1, citas_canceladas: 0, timestamp: 1779278400
  })
  t.equal(stats.queryCount, 2)
})

t.test('negocios asked for together share one statement; an unknown one among them is not_found alone', async (t) => {
  const { pool } = await testDatabase(t)
  const stats = createStatsService(pool)
  for (const id of ['a', 'b', 'c']) await addNegocio(pool, id)
  await addCita(pool, 'a', new Date(), 'atendida')
  await addCita(pool, 'b', new Date(), 'cancelada')
  await addCita(pool, 'b', new Date())
  const asked = ['a', 'b', 'c', 'ghost', 'a'].map(async id => await stats.compute(id).then(s => s.total_citas, (err: Error) => err.message))
  t.same(await Promise.all(asked), [1, 2, 0, 'negocio ghost does not exist', 1])
  t.equal(stats.queryCount, 1, 'one statement')
  await Promise.all(Array.from({ length: 250 }, async () => await stats.compute('a')))
  t.equal(stats.queryCount, 2, 'one negocio asked 250 times at once: once')
})

t.test('a negocio with many citas is computed in a statement of its own', async (t) => {
  const { pool } = await testDatabase(t)
  const stats = createStatsService(pool)
  await addNegocio(pool, 'big')
  await addNegocio(pool, 'small')
  await pool.query("INSERT INTO citas (negocio_id, fecha_hora) SELECT 'big', now() FROM generate_series(1, $1::int)", [SOLO_CITAS])
  t.same(await Promise.all([stats.compute('big'), stats.compute('small')]).then(r => r.map(s => s.total_citas)), [SOLO_CITAS, 0])
  t.equal(stats.queryCount, 1, 'together while its size is unknown')
  await Promise.all([stats.compute('big'), stats.compute('small')])
  t.equal(stats.queryCount, 3, 'apart once it is known')
})

t.test('a business with no citas has zeros; an unknown one is not_found', async (t) => {
  const { pool } = await testDatabase(t)
  const stats = createStatsService(pool)
  await addNegocio(pool, 'empty')
  t.match(await stats.compute('empty'), { negocio_id: 'empty', citas_hoy: 0, total_citas: 0, citas_completadas: 0, citas_canceladas: 0 })
  await t.rejects(stats.compute('ghost'), { code: 'not_found', message: 'negocio ghost does not exist' })
})

t.test('"today" is the business zone\'s day, half-open at local midnight', async (t) => {
  const { pool } = await testDatabase(t)
  // America/Mexico_City is UTC-6 all year: local 2026-03-09 runs from 06:00Z to 06:00Z next day.
  await addNegocio(pool, 'mx', 'America/Mexico_City')
  await addCita(pool, 'mx', '2026-03-09T05:59:59.999Z') // 23:59:59.999 on the 8th: yesterday
  await addCita(pool, 'mx', '2026-03-09T06:00:00Z') // 00:00 on the 9th: today
  await addCita(pool, 'mx', '2026-03-10T05:59:59.999Z') // 23:59:59.999 on the 9th: today
  await addCita(pool, 'mx', '2026-03-10T06:00:00Z') // 00:00 on the 10th: tomorrow

  const at = (iso: string) => createStatsService(pool, { timezone: 'UTC', now: () => new Date(iso) })
  // Late evening of the 9th local (already the 10th in UTC): both citas of the 9th count.
  t.equal((await at('2026-03-10T05:30:00Z').compute('mx')).citas_hoy, 2)
  // One minute past local midnight: the day has moved on.
  t.equal((await at('2026-03-10T06:01:00Z').compute('mx')).citas_hoy, 1)
  // Exactly at local midnight the new day starts.
  t.equal((await at('2026-03-10T06:00:00Z').compute('mx')).citas_hoy, 1)
  t.equal((await at('2026-03-09T05:59:59Z').compute('mx')).citas_hoy, 1)
})

t.test('STATS_TIMEZONE applies when the business has no zona_horaria', async (t) => {
  const { pool } = await testDatabase(t)
  await addNegocio(pool, 'nz')
  await addCita(pool, 'nz', '2026-07-01T13:00:00Z') // 2026-07-02 01:00 in Auckland (UTC+12)
  const now = () => new Date('2026-07-01T20:00:00Z') // 2026-07-02 08:00 in Auckland
  await addCita(pool, 'nz', '2026-07-01T23:30:00Z') // still the 1st in UTC; the 2nd in Auckland
  await addCita(pool, 'nz', '2026-07-02T13:00:00Z') // the 2nd in UTC; the 3rd in Auckland
  t.equal((await createStatsService(pool, { now }).compute('nz')).citas_hoy, 2, 'UTC day 2026-07-01')
  t.equal((await createStatsService(pool, { timezone: 'Pacific/Auckland', now }).compute('nz')).citas_hoy, 2, 'Auckland day 2026-07-02')
})

t.test('a 23-hour daylight-saving day', async (t) => {
  const { pool } = await testDatabase(t)
  // Europe/Madrid moves to summer time on 2026-03-29: that local day is 23 hours long.
  await addNegocio(pool, 'es', 'Europe/Madrid')
  await addCita(pool, 'es', '2026-03-28T23:00:00Z') // 00:00 CET on the 29th: today
  await addCita(pool, 'es', '2026-03-29T21:59:00Z') // 23:59 CEST on the 29th: today
  await addCita(pool, 'es', '2026-03-29T22:00:00Z') // 00:00 CEST on the 30th: tomorrow
  const stats = createStatsService(pool, { now: () => new Date('2026-03-29T12:00:00Z') })
  t.equal((await stats.compute('es')).citas_hoy, 2)
})

t.test('an unreachable database is unavailable, not a crash', async (t) => {
  const pg = await import('pg')
  const pool = new pg.default.Pool({ connectionString: 'postgres://nobody@127.0.0.1:1/none', connectionTimeoutMillis: 500 })
  t.teardown(() => pool.end())
  await t.rejects(createStatsService(pool).compute('x'), { code: 'unavailable', statusCode: 503 })
})

t.test('the stats query is an index-only scan per negocio', async (t) => {
  const { pool } = await testDatabase(t)
  // 100 businesses with 500 citas each: one business is 1% of the table.
  await pool.query("INSERT INTO negocios (id, nombre) SELECT 'n' || g, 'N' || g FROM generate_series(1, 100) g")
  await pool.query(`INSERT INTO citas (negocio_id, fecha_hora, estado)
    SELECT 'n' || (1 + g % 100), now() - make_interval(hours => g), (ARRAY['pendiente','confirmada','atendida','cancelada'])[1 + g % 4]
    FROM generate_series(1, 50000) g`)
  // Every page all-visible, as on a table autovacuum keeps: a transaction running elsewhere on the
  // server (other tests share it) can hold that back, so VACUUM again until it is so.
  await waitFor(async () => {
    await pool.query('VACUUM ANALYZE citas')
    const { rows: [rel] } = await pool.query("SELECT relpages, relallvisible FROM pg_class WHERE oid = 'citas'::regclass")
    return rel.relpages > 0 && rel.relallvisible === rel.relpages
  })
  const { rows } = await pool.query(`EXPLAIN ${STATS_SQL}`, [['n42', 'n7'], 'UTC', new Date().toISOString()])
  const plan = rows.map(r => r['QUERY PLAN']).join('\n')
  t.match(plan, /Index Only Scan using citas_stats_idx on citas/)
  t.notMatch(plan, /Seq Scan on citas/)
})
