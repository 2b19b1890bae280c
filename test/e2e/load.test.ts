import t, { type Test } from 'tap'
import { readdirSync, readFileSync, readlinkSync } from 'node:fs'
import WebSocket from 'ws'
import { addCita, addNegocio, SECRET, serviceToken, sign, testDatabase, waitFor, runServer } from '../helper.js'

// 1,000-client tests against the real process (server.ts through tsx), so the server's memory can be
// measured apart from the clients'. Clients open in batches and every wait is bounded.

// Two 1,000-client runs take a few minutes on a busy 2-core machine: more than the suite's default.
t.setTimeout(480_000)

const CLIENTS = 1000
const BATCH = 100

async function start (t: Test, env: Record<string, string>) {
  const db = await testDatabase(t)
  await addNegocio(db.pool, 'n1')
  const p = runServer({ DATABASE_URL: db.url, JWT_SECRET: SECRET, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'warn', NOTIFY_RATE_MAX: '0', WS_MAX_CONNECTIONS_PER_USER: '0', ...env })
  t.teardown(() => { p.child.kill('SIGKILL') })
  let port: number | undefined
  await waitFor(() => {
    if (p.child.exitCode !== null) throw new Error(`server did not start:\n${p.output()}`)
    port = listeningPort(p.child.pid as number)
    return port !== undefined
  }, 30_000)
  return { db, p, port: port as number }
}

/**
 * The TCP port process `pid` listens on, from /proc: the server listens on port 0, and LOG_LEVEL warn
 * hides the "listening" line (a per-request log would be huge).
 */
function listeningPort (pid: number): number | undefined {
  const sockets = new Set<string>()
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`, { encoding: 'utf8' }))
      if (m?.[1] !== undefined) sockets.add(m[1])
    }
  } catch {
    return undefined // the process is gone, or an fd closed while being read: look again
  }
  for (const line of readFileSync(`/proc/${pid}/net/tcp`, 'utf8').split('\n').slice(1)) {
    // sl local_address rem_address st ... inode: st 0A is LISTEN.
    const [, local, , state, , , , , , inode] = line.trim().split(/\s+/)
    if (state === '0A' && inode !== undefined && sockets.has(inode)) return parseInt(local?.split(':')[1] ?? '', 16)
  }
  return undefined
}

function rssMiB (pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return Number(m?.[1] ?? 0) / 1024
}

/** RSS once it stops moving: within 1 MiB of a read at least 100 ms older (the clients just connected). */
async function settledRssMiB (pid: number): Promise<number> {
  let ref = { at: Date.now(), rss: rssMiB(pid) }
  let last = ref.rss
  await waitFor(() => {
    last = rssMiB(pid)
    if (Date.now() - ref.at < 100) return false
    const settled = Math.abs(last - ref.rss) < 1
    ref = { at: Date.now(), rss: last }
    return settled
  }, 10_000).catch(() => {}) // still moving after 10 s: measure from there
  return last
}

interface Peer { ws: WebSocket, messages: string[], closed: Promise<{ code: number }> }

/** Pings and waits for the pong (which is then dropped): everything the server sent before it has arrived. */
async function roundTrip (peer: Peer): Promise<void> {
  const id = `sync-${Math.random()}`
  peer.ws.send(JSON.stringify({ type: 'ping', id }))
  const isPong = (m: string): boolean => m.includes(`"id":"${id}"`)
  await waitFor(() => peer.messages.some(isPong), 20_000)
  peer.messages.splice(peer.messages.findIndex(isPong), 1)
}

/** Opens `n` clients subscribed to n1, in batches; resolves once each has its first stats. */
async function openClients (url: string, n: number, t: Test): Promise<Peer[]> {
  const peers: Peer[] = []
  for (let i = 0; i < n; i += BATCH) {
    peers.push(...await Promise.all(Array.from({ length: Math.min(BATCH, n - i) }, async () => {
      const ws = new WebSocket(url)
      t.teardown(() => ws.terminate())
      const messages: string[] = []
      const closed = new Promise<{ code: number }>(resolve => ws.on('close', code => resolve({ code })))
      ws.on('error', () => {})
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no stats within 20 s')), 20_000)
        ws.on('message', (data) => {
          messages.push(data.toString())
          if (messages.length === 2) { clearTimeout(timer); resolve() }
        })
        ws.on('open', () => ws.send('{"type":"subscribe","data":{"channel":"estadisticas:n1"}}'))
      })
      return { ws, messages, closed }
    })))
  }
  return peers
}

async function notify (http: string, token: string): Promise<number> {
  const res = await fetch(`${http}/notify/cita`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: '{"negocio_id":"n1","action":"updated"}',
    signal: AbortSignal.timeout(15_000)
  })
  await res.arrayBuffer()
  return res.status
}

t.test('1,000 clients that never read while notifies flow: server memory stays flat, fast clients get everything, slow ones the newest', async (t) => {
  // The kernel's socket buffers absorb the first few hundred KiB per socket before bufferedAmount
  // grows at all, so the bound itself is proven with large payloads in test/routes/slow.test.ts;
  // this test shows what users see at scale. The heartbeat is slowed so paused peers are not cut.
  const { db, p, port } = await start(t, { WS_MAX_BUFFERED_BYTES: String(16 * 1024), WS_STALL_TIMEOUT_MS: '600000', WS_HEARTBEAT_MS: '600000' })
  const url = `ws://127.0.0.1:${port}/ws?token=${sign({ negocio_id: 'n1' })}`
  const http = `http://127.0.0.1:${port}`
  const slow = await openClients(url, CLIENTS, t)
  for (const s of slow) s.ws.pause() // stop reading: the kernel buffers fill, then the server's
  const fast = await openClients(url, 5, t)
  const before = await settledRssMiB(p.child.pid as number)

  const token = serviceToken()
  const NOTIFIES = 1000
  const payloadBytes = (fast[0]?.messages[1] ?? '').length
  let sent = 0
  const statuses = new Map<number, number>()
  let peak = before
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (sent < NOTIFIES) {
      sent++
      const status = await notify(http, token)
      statuses.set(status, (statuses.get(status) ?? 0) + 1)
      if (sent % 250 === 0) peak = Math.max(peak, rssMiB(p.child.pid as number))
    }
  }))
  await addCita(db.pool, 'n1', new Date())
  t.equal(await notify(http, token), 200)
  const after = rssMiB(p.child.pid as number)
  peak = Math.max(peak, after)
  t.same([...statuses], [[200, NOTIFIES]], 'every notify succeeded')

  const unbounded = (NOTIFIES * payloadBytes * CLIENTS) / 2 ** 20
  t.comment(`server RSS: ${before.toFixed(0)} MiB before, peak ${peak.toFixed(0)} MiB, ${after.toFixed(0)} MiB after ${NOTIFIES} notifies to ${CLIENTS} paused clients (${payloadBytes} B each: ${unbounded.toFixed(0)} MiB if every message were queued)`)
  // Generous bound: ws keeps up to the bound plus one frame per socket (~17 MiB for 1,000) and V8 grows its heap under load.
  t.ok(peak - before < 100, `server memory growth ${(peak - before).toFixed(0)} MiB stays under 100 MiB`)

  // Fast clients received every push, in order, while the slow ones were stuck. Notifies that
  // arrive while a recompute runs share one (coalescing), so pushes are fewer than notifies; each
  // fast client must see exactly the same pushes and end on the newest figures.
  // Every push was written before the last notify's reply; a pong comes after all of them on its socket.
  await Promise.all(fast.map(async f => await roundTrip(f)))
  const reference = fast[0]?.messages ?? []
  t.ok(reference.length >= 3, `fast clients got subscribed, the snapshot and ${reference.length - 2} pushes for ${NOTIFIES + 1} notifies`)
  for (const f of fast) {
    t.same(f.messages, reference, 'every fast client gets every push, in the same order')
    t.match(JSON.parse(f.messages.at(-1) ?? '{}'), { type: 'stats', data: { total_citas: 1 } })
  }

  // Resume a few slow clients: they drain, then get the newest stats, having skipped the rest.
  const sample = slow.slice(0, 5)
  for (const s of sample) s.ws.resume()
  await waitFor(() => sample.every(s => s.messages.some(m => m.includes('"total_citas":1'))), 20_000)
  for (const s of sample) {
    t.ok(s.messages.length <= NOTIFIES + 3, `a slow client got at most every message (${s.messages.length} of ${NOTIFIES + 3})`)
    t.match(JSON.parse(s.messages.at(-1) ?? '{}'), { type: 'stats', data: { total_citas: 1 } }, 'and its last message is the newest')
  }
})

t.test('SIGTERM with 1,000 clients and notifies in flight: every client gets 1012, every notify a clear answer, exit within the grace period', async (t) => {
  const GRACE = 10_000
  const { p, port } = await start(t, { SHUTDOWN_GRACE_MS: String(GRACE) })
  const url = `ws://127.0.0.1:${port}/ws?token=${sign({ negocio_id: 'n1' })}`
  const http = `http://127.0.0.1:${port}`
  const clients = await openClients(url, CLIENTS, t)
  const token = serviceToken()

  const outcomes = new Map<string, number>()
  let stop = false
  let ok = 0
  const flow = Promise.all(Array.from({ length: 16 }, async () => {
    while (!stop) {
      let outcome: string
      try {
        outcome = String(await notify(http, token))
      } catch (err) {
        // Once the listener is closed, a new connection is refused: a clear failure, not a hang.
        outcome = ((err as { cause?: { code?: string } }).cause?.code) ?? (err as Error).name
        stop = true
      }
      if (outcome === '200') ok++
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1)
    }
  }))
  await waitFor(() => ok >= 50, 30_000)
  p.child.kill('SIGTERM')
  const code = await p.exited
  stop = true
  await flow

  const closes = await Promise.all(clients.map(async c => (await c.closed).code))
  const byCode = new Map<number, number>()
  for (const c of closes) byCode.set(c, (byCode.get(c) ?? 0) + 1)
  t.same([...byCode], [[1012, CLIENTS]], 'every client got 1012')
  t.equal(code, 0, 'clean exit')
  // Past the grace, close-with-grace would end the process with code 1 and say "killed by timeout".
  t.notMatch(p.output(), /killed by timeout/, `within the ${GRACE} ms grace period`)
  const allowed = new Set(['200', '503', 'ECONNREFUSED', 'ECONNRESET', 'UND_ERR_SOCKET'])
  t.same([...outcomes.keys()].filter(k => !allowed.has(k)), [], `every notify completed or failed clearly: ${JSON.stringify([...outcomes])}`)
  t.comment(`notify outcomes: ${JSON.stringify([...outcomes])}`)
  if (code !== 0) t.comment(p.output().slice(-3000))
})
