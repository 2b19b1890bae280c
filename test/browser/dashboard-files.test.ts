import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { build, testDatabase } from '../helper.js'

const root = new URL('../../', import.meta.url).pathname

/** Builds the dashboard as `npm run build` does, into a folder of this test file's own. */
async function builtDashboard (): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'citas-live-dashboard-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  await promisify(execFile)(process.execPath, [join(root, 'scripts/build-dashboard.mjs'), dir], { cwd: root })
  return dir
}

const dashboard = await builtDashboard()
const database = await testDatabase(t)

t.test('serves the dashboard at /, with its script and styles', async (t) => {
  const { app } = await build(t, { database, dashboard: { root: dashboard } })
  const page = await app.inject('/?token=abc')
  t.equal(page.statusCode, 200)
  t.match(page.headers['content-type'], /^text\/html/)
  t.equal(page.headers['cache-control'], 'no-cache')
  t.match(page.body, /Citas hoy[\s\S]*Total de citas[\s\S]*Completadas[\s\S]*Canceladas/)
  const script = await app.inject('/app.js')
  t.equal(script.statusCode, 200)
  t.match(script.headers['content-type'], /javascript/)
  t.equal((await app.inject('/style.css')).statusCode, 200)
  t.equal((await app.inject('/nope')).statusCode, 404, 'no catch-all route')
  t.equal((await app.inject('/health')).statusCode, 200, 'the API routes are untouched')
})

t.test('under a prefix, /live redirects to /live/ so the page finds app.js and ws beside it', async (t) => {
  const { app } = await build(t, { database, prefix: '/live', dashboard: { root: dashboard } })
  const bare = await app.inject('/live?negocios=a')
  t.equal(bare.statusCode, 301)
  t.equal(bare.headers.location, '/live/?negocios=a')
  t.equal((await app.inject('/live/')).statusCode, 200)
  t.equal((await app.inject('/live/app.js')).statusCode, 200)
  t.equal((await app.inject('/')).statusCode, 404)
})

t.test('dashboard: false serves nothing at / (for a host app that owns it)', async (t) => {
  const { app } = await build(t, { database, dashboard: false })
  t.equal((await app.inject('/')).statusCode, 404)
})

t.test('a dashboard that was not built is skipped with a warning, not a boot failure', async (t) => {
  const { app } = await build(t, { database, dashboard: { root: join(dashboard, 'missing') } })
  t.equal((await app.inject('/')).statusCode, 404)
  t.equal((await app.inject('/health')).statusCode, 200)
})
