import t from 'tap'
import { testDatabase } from '../helper.js'

// negocios.zona_horaria decides what "today" is for a business: only zone names PostgreSQL knows.
t.test('zona_horaria accepts IANA zone names and refuses offsets and unknown names', async (t) => {
  const db = await testDatabase(t)
  let n = 0
  const insert = async (zona: string | null): Promise<void> => {
    await db.pool.query('INSERT INTO negocios (id, nombre, zona_horaria) VALUES ($1, $2, $3)', [`n${++n}`, 'x', zona])
  }
  for (const good of ['Europe/Madrid', 'America/Mexico_City', 'Asia/Kolkata', 'UTC', null]) {
    await t.resolves(insert(good), `accepts ${String(good)}`)
  }
  // POSIX-style offsets have inverted signs in PostgreSQL: 'UTC+05:30' would mean UTC-05:30.
  for (const bad of ['UTC+05:30', '+05:30', 'GMT-3', '-03', 'Mars/Olympus', '']) {
    await t.rejects(insert(bad), { code: '22023', message: /is not a time zone name PostgreSQL knows/ }, `refuses ${JSON.stringify(bad)}`)
  }
  await t.rejects(db.pool.query("UPDATE negocios SET zona_horaria = 'UTC+05:30' WHERE id = 'n1'"), { code: '22023' }, 'an update is checked too')
  const { rows } = await db.pool.query<{ zona_horaria: string }>("SELECT zona_horaria FROM negocios WHERE id = 'n1'")
  t.equal(rows[0]?.zona_horaria, 'Europe/Madrid', 'and the row keeps its zone')
})
