// CI: the built server as `npm start` runs it (embedded demo): subscribe, notify, a captured change pushed, dashboard, 1012 on SIGTERM.
import { spawn } from 'node:child_process'
import { on } from 'node:events'
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import WebSocket from 'ws'

const dir = await mkdtemp(join(tmpdir(), 'citas-live-smoke-'))
await chmod(dir, 0o755)
const child = spawn(process.execPath, ['dist/server.js'], {
  env: { PATH: process.env.PATH, PORT: '0', HOST: '127.0.0.1', EMBEDDED_PG_DIR: join(dir, 'pg'), EMBEDDED_PG_PORT: '0' },
  stdio: ['ignore', 'pipe', 'inherit']
})
let out = ''
child.stdout.on('data', (d) => { out += d })
const exited = new Promise(resolve => child.on('exit', resolve))
const fail = async (why) => {
  process.stderr.write(`smoke: FAILED: ${why}\n${out}\n`)
  // SIGTERM stops the embedded PostgreSQL too; after a SIGKILL it would outlive the server.
  child.kill('SIGTERM')
  const stopped = await Promise.race([exited.then(() => true), new Promise(resolve => setTimeout(resolve, 20_000, false))])
  if (!stopped) {
    child.kill('SIGKILL')
    const pid = Number((await readFile(join(dir, 'pg', 'data', 'postmaster.pid'), 'utf8').catch(() => '')).split('\n')[0])
    try { if (pid > 0) process.kill(pid, 'SIGQUIT') } catch {}
  }
  await rm(dir, { recursive: true, force: true })
  process.exit(1)
}
const deadline = setTimeout(() => fail('timed out after 60 s'), 60_000)

while (!/notify:/.test(out)) {
  if (child.exitCode !== null) await fail(`server exited with ${child.exitCode}`)
  await new Promise(resolve => setTimeout(resolve, 50))
}
const base = /WebSocket: +ws:\/\/([^/]+)\//.exec(out)[1]
const token = /user token: +(\S+)/.exec(out)[1]
// The notify curl's token (the SSE curl line above it carries the user's).
const service = /Bearer (\S+)' \\\n/.exec(out)[1]
const negocio = /negocios: +([^,\s]+)/.exec(out)[1]

const ws = new WebSocket(`ws://${base}/ws?token=${token}`)
const incoming = on(ws, 'message')
const next = async () => JSON.parse((await incoming.next()).value[0])
await new Promise((resolve, reject) => { ws.on('open', resolve); ws.on('error', reject) })
ws.send(JSON.stringify({ type: 'subscribe', data: { channel: `estadisticas:${negocio}` } }))
const subscribed = await next()
const first = await next()
if (subscribed.type !== 'subscribed' || first.type !== 'stats') await fail(`unexpected ${JSON.stringify([subscribed, first])}`)

const headers = { 'content-type': 'application/json', authorization: `Bearer ${service}` }
const res = await fetch(`http://${base}/notify/cita`, { method: 'POST', headers, body: JSON.stringify({ negocio_id: negocio, action: 'updated' }) })
if (res.status !== 200) await fail(`notify answered ${res.status}`)
const answer = await res.json()
if (answer.stats?.negocio_id !== negocio || typeof answer.bus !== 'string') await fail(`unexpected notify reply ${JSON.stringify(answer)}`)
// The demo's activity writes straight to the database; a subscriber never gets the same figures twice in a row.
const figures = (m) => [m.data.citas_hoy, m.data.total_citas, m.data.citas_completadas, m.data.citas_canceladas].join('/')
const pushed = await next()
if (pushed.type !== 'stats' || pushed.data.negocio_id !== negocio || figures(pushed) === figures(first)) await fail(`unexpected push ${JSON.stringify(pushed)} after ${JSON.stringify(first)}`)

// Every adapter found the internals it knows on this Node.
const fallback = /[^\n]*is not the version citas-live knows[^\n]*/.exec(out)
if (fallback !== null) await fail(`an adapter fell back to its public path: ${fallback[0]}`)

const dashboardUrl = /dashboard: +(\S+)/.exec(out)?.[1]
const page = dashboardUrl === undefined ? null : await fetch(dashboardUrl)
if (page?.status !== 200 || !(await page.text()).includes('Citas hoy')) await fail(`dashboard ${dashboardUrl} answered ${page?.status}`)

const closed = new Promise(resolve => ws.on('close', (code) => resolve(code)))
child.kill('SIGTERM')
const code = await closed
const exit = await exited
clearTimeout(deadline)
await rm(dir, { recursive: true, force: true })
if (code !== 1012 || exit !== 0) await fail(`close code ${code}, exit ${exit}`)
process.stdout.write(`smoke: ok (embedded demo on ${base}: subscribe, stats, notify, captured change pushed, dashboard, 1012 on SIGTERM)\n`)
