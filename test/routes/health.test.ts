import t from 'tap'
import { build } from '../helper.js'

t.test('/health is always ok; /ready follows the database', async (t) => {
  const { app, db } = await build(t)
  t.same((await app.inject('/health')).json(), { status: 'ok' })
  const ready = await app.inject('/ready')
  t.equal(ready.statusCode, 200)
  t.same(ready.json(), { status: 'ready' })

  await db.setDown(true)
  const down = await app.inject('/ready')
  t.equal(down.statusCode, 503)
  t.match(down.json(), { status: 'unavailable', message: 'database unreachable' })
  t.equal((await app.inject('/health')).statusCode, 200, 'alive even when the database is not')

  await db.setDown(false)
  t.equal((await app.inject('/ready')).statusCode, 200)
})
