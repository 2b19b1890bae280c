import t from 'tap'
import { existsSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import pg from 'pg'
import { addCita, addNegocio, Client, SECRET, serviceToken, sign, testDatabase, waitFor, runServer, type ServerProcess } from '../helper.js'
import { demoFolder, demoReady } from '../fixtures/demo.js'

async function listening (p: ServerProcess): Promise<number> {
  let port = 0
  await waitFor(() => {
    const m = /Server listening at http:\/\/127\.0\.0\.1:(\d+)/.exec(p.output())
    if (m?.[1] !== undefined) port = Number(m[1])
    return port !== 0 || p.child.exitCode !== null
  }, 30_000)
  if (port === 0) throw new Error(`server did not start:\n${p.output()}`)
  return port
}

t.test('a bad or missing variable stops the process with one line naming it', async (t) => {
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ PORT: 'eighty' }, /^citas-live: invalid PORT: /],
    [{ STATS_TIMEZONE: 'Nowhere/Land' }, /^citas-live: invalid STATS_TIMEZONE: /],
    [{ DATABASE_URL: 'postgres://127.0.0.1:5432/test' }, /^citas-live: invalid JWT_SECRET: required when DATABASE_URL is set/]
  ]
  for (const [env, line] of cases) {
    const p = runServer(env)
    t.equal(await p.exited, 1, JSON.stringify(env))
    const lines = p.output().trim().split('\n')
    t.equal(lines.length, 1, 'one line')
    t.match(lines[0], line)
  }
})

t.test('with DATABASE_URL: serves the protocol, never logs a token, and SIGTERM closes sockets with 1012', async (t) => {
  const db = await testDatabase(t)
  await addNegocio(db.pool, 'n1')
  const p = runServer({ DATABASE_URL: db.url, JWT_SECRET: SECRET, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info' })
  t.teardown(() => { p.child.kill('SIGKILL') })
  const port = await listening(p)

  const token = sign({ negocio_id: 'n1' })
  const c = await Client.open(`ws://127.0.0.1:${port}/ws?token=${token}`, t)
  t.match(await c.subscribe('n1'), { type: 'stats', data: { total_citas: 0 } })
  await addCita(db.pool, 'n1', new Date())
  const svc = serviceToken()
  const res = await fetch(`http://127.0.0.1:${port}/notify/cita`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${svc}` },
    body: JSON.stringify({ negocio_id: 'n1', action: 'created' })
  })
  t.equal(res.status, 200)
  t.match(await c.next(), { type: 'stats', data: { total_citas: 1 } })
  const refused = await fetch(`http://127.0.0.1:${port}/ws?token=${sign({ negocio_id: 'n1' }, { secret: 'not-the-secret-at-all' })}`)
  t.equal(refused.status, 401)

  p.child.kill('SIGTERM')
  t.same(await c.closed, { code: 1012, reason: 'server restarting' })
  t.equal(await p.exited, 0)
  const log = p.output()
  t.match(log, /\/ws\?token=\[REDACTED\]/, 'the URL is logged with the token cut out')
  t.notOk(log.includes(token), 'the user token never appears in the log')
  t.notOk(log.includes(svc), 'the service token never appears in the log')
  t.notOk(log.includes(token.split('.')[2] ?? 'x'), 'not even its signature')
})

t.test('a PORT already in use stops the process with one line naming the port and who holds it', async (t) => {
  const db = await testDatabase(t)
  const holder = createServer()
  await new Promise<void>(resolve => holder.listen(0, '127.0.0.1', resolve))
  t.teardown(() => holder.close())
  const { port } = holder.address() as { port: number }
  const p = runServer({ DATABASE_URL: db.url, JWT_SECRET: SECRET, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'error' })
  t.teardown(() => { p.child.kill('SIGKILL') })
  t.equal(await p.exited, 1)
  const lines = p.output().trim().split('\n')
  t.equal(lines.length, 1, `one line: ${p.output()}`)
  t.match(lines[0], `citas-live: port ${port} on 127.0.0.1 is in use by process ${process.pid} (`)
  t.match(lines[0], /set PORT to another port/)
})

t.test('a lost database connection is logged without the database client it belonged to', async (t) => {
  const db = await testDatabase(t)
  await addNegocio(db.pool, 'n1')
  const p = runServer({ DATABASE_URL: db.url, JWT_SECRET: SECRET, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info' })
  t.teardown(() => { p.child.kill('SIGKILL') })
  const port = await listening(p)
  // A subscribe runs the stats query, which leaves a connection idle in the server's pool.
  const c = await Client.open(`ws://127.0.0.1:${port}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
  await c.subscribe('n1')
  const killer = new pg.Client({ connectionString: db.url })
  await killer.connect()
  t.teardown(() => killer.end())
  await waitFor(async () => {
    await killer.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = 'citas-live' AND state = 'idle'")
    return /idle database connection lost/.test(p.output())
  }, 10_000)
  const line = p.output().split('\n').find(l => l.includes('idle database connection lost')) ?? ''
  const entry = JSON.parse(line) as { level: number, err: Record<string, unknown> }
  t.match(entry, { level: 40, err: { type: 'DatabaseError', code: '57P01', message: /terminating connection/ } })
  t.equal(entry.err.client, '[Client]', 'the client is named, not dumped')
  t.notMatch(line, /secretKey|processID|connectionParameters|password/, 'no field of the client reaches the log')
  p.child.kill('SIGTERM')
  t.equal(await p.exited, 0)
})

t.test('with no DATABASE_URL: the embedded demo starts, seeds, prints a working token, and keeps its data and secret', async (t) => {
  const folder = await demoFolder(t)
  const env = folder.env({ DEMO_ACTIVITY: 'off' }) // no changes but the test's own, so the figures are exact
  const p = folder.track(runServer(env))
  const { port, userToken: token, serviceToken: svc, databaseUrl: url } = await demoReady(p)
  t.match(p.output(), new RegExp(`ws://127\\.0\\.0\\.1:${port}/ws\\?token=`), 'prints the ws URL')

  const second = runServer(env)
  t.equal(await second.exited, 1, 'a second process cannot share the data folder')
  t.match(second.output(), /in use by process/)

  const c = await Client.open(`ws://127.0.0.1:${port}/ws?token=${token}`, t)
  const first = await c.subscribe('barberia-centro')
  t.match(first, { type: 'stats', data: { negocio_id: 'barberia-centro' } })
  t.ok(first.data.total_citas > 10 && first.data.citas_hoy > 0 && first.data.citas_completadas > 0 && first.data.citas_canceladas > 0,
    'demo data has citas today, atendidas and canceladas')

  const pool = new pg.Pool({ connectionString: url })
  pool.on('error', () => {}) // the server's shutdown stops this database under the pool
  t.teardown(() => pool.end().catch(() => {})) // a teardown that throws skips those registered before it, like the folder's
  await addCita(pool as never, 'barberia-centro', new Date())
  const res = await fetch(`http://127.0.0.1:${port}/notify/cita`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${svc}` },
    body: JSON.stringify({ negocio_id: 'barberia-centro', action: 'created' })
  })
  t.equal(res.status, 200)
  t.match(await c.next(), { type: 'stats', data: { total_citas: first.data.total_citas + 1, citas_hoy: first.data.citas_hoy + 1 } })

  p.child.kill('SIGTERM')
  t.equal((await c.closed).code, 1012)
  t.equal(await p.exited, 0)
  t.notOk(existsSync(join(folder.dir, 'lock')), 'the lock is released')

  const again = await demoReady(folder.track(runServer(env)))
  t.match(again.p.output(), /secret kept in \S+jwt-secret/, 'the banner says where the secret is kept')
  // The dashboard of the first run reconnects with the token it already has.
  const c2 = await Client.open(`ws://127.0.0.1:${again.port}/ws?token=${token}`, t)
  t.match(await c2.subscribe('barberia-centro'), { type: 'stats', data: { total_citas: first.data.total_citas + 1 } },
    'data survived the restart, and the first run\'s token still works')
  again.p.child.kill('SIGTERM')
  t.equal(await again.p.exited, 0)
})
