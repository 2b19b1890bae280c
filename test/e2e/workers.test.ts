import t from 'tap'
import { addCita, addNegocio, Client, runServer, SECRET, sign, testDatabase, waitFor, type ServerProcess } from '../helper.js'

// WORKERS=2: one port served by two processes, each an instance on the bus, one of them leading
// change capture; the primary replaces a worker that dies and closes them all on SIGTERM.

const METRICS_TOKEN = 'metrics-token-0123456789abcdef'

/** Pids of the workers that said they listen, in order. */
function workerPids (p: ServerProcess): number[] {
  const pids: number[] = []
  for (const line of p.output().split('\n')) {
    if (!line.startsWith('{')) continue
    const entry = JSON.parse(line) as { pid: number, msg: string }
    if (/^Server listening at /.test(entry.msg) && !pids.includes(entry.pid)) pids.push(entry.pid)
  }
  return pids
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

t.test('WORKERS=2 serves one port from two processes, replaces a dead one, and SIGTERM closes all', async (t) => {
  const db = await testDatabase(t)
  await addNegocio(db.pool, 'n1')
  const p = runServer({ WORKERS: '2', DATABASE_URL: db.url, JWT_SECRET: SECRET, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info', METRICS_TOKEN })
  t.teardown(() => {
    for (const pid of workerPids(p)) if (alive(pid)) process.kill(pid, 'SIGKILL')
    p.child.kill('SIGKILL')
  })
  await waitFor(() => /"msg":"workers listening"/.test(p.output()) || p.child.exitCode !== null, 60_000)
  const port = Number(/"port":(\d+),"msg":"workers listening"/.exec(p.output())?.[1])
  if (!(port > 0)) throw new Error(`the workers did not start:\n${p.output()}`)
  const [first, second] = workerPids(p)
  t.ok(first !== undefined && second !== undefined && first !== second && first !== p.child.pid, 'two workers, neither the primary')
  const base = `127.0.0.1:${port}`
  const metric = async (pattern: RegExp): Promise<number> => {
    const text = await (await fetch(`http://${base}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } })).text()
    return Number(pattern.exec(text)?.[1] ?? NaN)
  }
  // One leader and one follower, added up over the workers by the primary.
  await waitFor(async () => await metric(/citas_live_change_capture_info\{mode="table",role="leader"\} (\d+)/) === 1 &&
    await metric(/citas_live_change_capture_info\{mode="table",role="follower"\} (\d+)/) === 1, 30_000)

  const clients: Client[] = []
  for (let i = 0; i < 8; i++) {
    const c = await Client.open(`ws://${base}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
    await c.subscribe('n1')
    clients.push(c)
  }
  t.equal(await metric(/citas_live_connections\{transport="websocket"\} (\d+)/), 8, 'the whole cluster\'s sockets in one scrape')
  t.ok(await metric(/citas_live_subscriptions (\d+)/) === 8)
  await addCita(db.pool, 'n1', new Date())
  await waitFor(() => clients.every(c => c.received.at(-1)?.data?.total_citas === 1))
  t.pass('a direct write reached the subscribers of both workers')

  process.kill(first as number, 'SIGKILL')
  await waitFor(() => /a worker died: starting another/.test(p.output()) && workerPids(p).length === 3, 30_000)
  const died = p.output().split('\n').filter(l => l.includes('a worker died')).map(l => JSON.parse(l) as Record<string, unknown>)
  t.match(died, [{ level: 50, signal: 'SIGKILL', restartInMs: 500 }])
  t.equal(died[0]?.worker, first, 'the log names the worker that died')
  const replacement = workerPids(p)[2] as number
  await waitFor(async () => await metric(/citas_live_change_capture_info\{mode="table",role="leader"\} (\d+)/) === 1 &&
    await metric(/citas_live_change_capture_info\{mode="table",role="follower"\} (\d+)/) === 1, 30_000)
  const survivors = clients.filter(c => c.ws.readyState === c.ws.OPEN)
  t.ok(survivors.length > 0 && survivors.length < 8, `the sockets of the dead worker closed, the others stayed (${survivors.length})`)
  await addCita(db.pool, 'n1', new Date())
  await waitFor(() => survivors.every(c => c.received.at(-1)?.data?.total_citas === 2))
  const late = await Client.open(`ws://${base}/ws?token=${sign({ negocio_id: 'n1' })}`, t)
  t.match(await late.subscribe('n1'), { data: { total_citas: 2 } })

  p.child.kill('SIGTERM')
  t.equal(await p.exited, 0, 'the primary exits 0 once its workers closed')
  for (const c of survivors) t.same(await c.closed, { code: 1012, reason: 'server restarting' })
  t.notOk(alive(second as number) || alive(replacement), 'no worker left behind')
})
