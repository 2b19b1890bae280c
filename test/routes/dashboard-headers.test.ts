import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { build, testDatabase } from '../helper.js'

const root = new URL('../../', import.meta.url).pathname
const dashboard = await mkdtemp(join(tmpdir(), 'citas-live-headers-'))
t.teardown(() => rm(dashboard, { recursive: true, force: true }))
await promisify(execFile)(process.execPath, [join(root, 'scripts/build-dashboard.mjs'), dashboard], { cwd: root })
const database = await testDatabase(t)

t.test('the dashboard carries the headers a security scanner expects', async (t) => {
  const { app } = await build(t, { database, dashboard: { root: dashboard } })
  for (const path of ['/', '/app.js', '/style.css']) {
    const res = await app.inject(path)
    t.equal(res.statusCode, 200, path)
    t.match(res.headers['content-security-policy'], /frame-ancestors 'none'/, `${path}: cannot be framed (CSP)`)
    t.match(res.headers['content-security-policy'], /default-src 'self'/, `${path}: own origin only`)
    t.match(res.headers['content-security-policy'], /connect-src 'self' ws: wss:/, `${path}: the page may open its WebSocket`)
    t.equal(res.headers['x-frame-options'], 'DENY', `${path}: cannot be framed (older browsers)`)
    t.equal(res.headers['x-content-type-options'], 'nosniff', `${path}: no sniffing`)
    t.equal(res.headers['referrer-policy'], 'no-referrer', `${path}: the token in the address never leaves as a Referer`)
    t.notOk(res.headers['strict-transport-security'], `${path}: HSTS is left to whoever terminates TLS`)
  }
  t.equal((await app.inject('/app.js.map')).statusCode, 404, 'the source map is not served')
  const api = await app.inject('/health')
  t.equal(api.statusCode, 200)
  t.notOk(api.headers['content-security-policy'], 'the API routes are left alone')
})

t.test('the source map only when asked for', async (t) => {
  const { app } = await build(t, { database, dashboard: { root: dashboard, sourceMaps: true } })
  const map = await app.inject('/app.js.map')
  t.equal(map.statusCode, 200)
  t.equal(map.json().version, 3)
})
