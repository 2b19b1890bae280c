import t from 'tap'
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type pg from 'pg'
import { chromium, type Browser, type Page } from 'playwright-core'
import { addNegocio, build, listen, serviceToken, sign, testDatabase, WAIT_MS } from '../helper.js'
import { noUpgradeProxy } from '../fixtures/no-upgrade-proxy.js'

// Behind a proxy that lets plain HTTP through but refuses every WebSocket upgrade, the dashboard
// falls back to Server-Sent Events by itself and stays live.

const root = new URL('../../', import.meta.url).pathname
const artifacts = join(root, 'test', 'artifacts')
const executablePath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

// A missing browser fails the run: a browser test that quietly skips would prove nothing.
if (!existsSync(executablePath)) {
  throw new Error(`no Chromium at ${executablePath}: install the chromium package (.ci/run does), or set CHROMIUM_PATH`)
}

// Page functions run in the browser; this file is typechecked without the DOM library.
declare const document: any

const FIGURES = ['citas_hoy', 'total_citas', 'citas_completadas', 'citas_canceladas'] as const
type Figures = Record<typeof FIGURES[number], string>

/** The four figures straight from the citas table ("today" in UTC, the server's default zone). */
async function databaseFigures (pool: pg.Pool, negocio: string): Promise<Figures> {
  const { rows } = await pool.query(`
    SELECT count(*) FILTER (WHERE fecha_hora >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                              AND fecha_hora < (date_trunc('day', now() AT TIME ZONE 'UTC') + interval '1 day') AT TIME ZONE 'UTC') AS citas_hoy,
           count(*) AS total_citas,
           count(*) FILTER (WHERE estado = 'atendida') AS citas_completadas,
           count(*) FILTER (WHERE estado = 'cancelada') AS citas_canceladas
      FROM citas WHERE negocio_id = $1`, [negocio])
  return rows[0] as Figures
}

/** Inserts `count` citas: `when` is 'today' (spread over today, UTC) or 'past'. */
async function addCitas (pool: pg.Pool, negocio: string, count: number, estado: string, when: 'today' | 'past'): Promise<void> {
  const start = when === 'today' ? "date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'" : "now() - interval '400 days'"
  await pool.query(`
    INSERT INTO citas (negocio_id, fecha_hora, estado)
    SELECT $1, ${start} + (i * interval '1 minute'), $2 FROM generate_series(1, $3::int) AS i`, [negocio, estado, count])
}

async function shownFigures (page: Page, negocio: string): Promise<Figures> {
  return await page.evaluate(([n, figures]) => {
    const section = [...document.querySelectorAll('section.negocio')].find((s: any) => s.dataset.negocio === n)
    return Object.fromEntries(figures.map(f => [f, section?.querySelector(`[data-figure="${f}"] .value`)?.textContent ?? ''])) as any
  }, [negocio, FIGURES] as const)
}

async function waitForFigures (page: Page, negocio: string, want: Figures, timeout: number): Promise<void> {
  await page.waitForFunction(([n, w]) => {
    const section = [...document.querySelectorAll('section.negocio')].find((s: any) => s.dataset.negocio === n)
    return Object.entries(w).every(([f, v]) => section?.querySelector(`[data-figure="${f}"] .value`)?.textContent === v)
  }, [negocio, want] as const, { timeout })
}

async function notify (http: string, negocio: string): Promise<void> {
  const res = await fetch(`${http}/notify/cita`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${serviceToken()}` },
    body: JSON.stringify({ negocio_id: negocio, action: 'created' })
  })
  if (res.status !== 200) throw new Error(`notify: ${res.status} ${await res.text()}`)
}

const dashboard = await mkdtemp(join(tmpdir(), 'citas-live-dashboard-'))
t.teardown(() => rm(dashboard, { recursive: true, force: true }))
await promisify(execFile)(process.execPath, [join(root, 'scripts/build-dashboard.mjs'), dashboard], { cwd: root })
await mkdir(artifacts, { recursive: true })

const browser: Browser = await chromium.launch({
  executablePath,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run']
})
t.teardown(() => browser.close())

t.test('behind a proxy that refuses WebSocket upgrades, the dashboard switches to SSE and shows live figures', async (t) => {
  const db = await testDatabase(t)
  await addNegocio(db.pool, 'barberia-centro')
  await addNegocio(db.pool, 'clinica-dental-sol')
  await addCitas(db.pool, 'barberia-centro', 140, 'atendida', 'past')
  await addCitas(db.pool, 'barberia-centro', 8, 'cancelada', 'past')
  await addCitas(db.pool, 'barberia-centro', 12, 'confirmada', 'today')
  await addCitas(db.pool, 'clinica-dental-sol', 51, 'atendida', 'past')
  await addCitas(db.pool, 'clinica-dental-sol', 7, 'pendiente', 'today')
  const { app } = await build(t, { database: db, dashboard: { root: dashboard } })
  const srv = await listen(app)
  let upgrades = 0
  app.server.on('upgrade', () => { upgrades++ })
  const proxy = await noUpgradeProxy({ host: '127.0.0.1', port: srv.port })
  t.teardown(() => proxy.close())

  const context = await browser.newContext({ viewport: { width: 1000, height: 470 }, locale: 'es-ES', timezoneId: 'UTC' })
  t.teardown(() => context.close())
  const page = await context.newPage()
  const pageErrors: Error[] = []
  page.on('pageerror', (err) => pageErrors.push(err))
  const token = sign({ sub: 'demo-user', negocios: ['barberia-centro', 'clinica-dental-sol'] })

  await page.goto(`${proxy.http}/?token=${token}`)
  // Three refused upgrades with their backoff delays (at most 0.5 + 1 + 2 s), then the stream.
  await page.waitForFunction(() => document.getElementById('pill')?.textContent === 'Conectado' &&
    document.getElementById('transport')?.dataset.transport === 'sse', undefined, { timeout: WAIT_MS })
  t.equal(await page.textContent('#transport'), 'vía SSE', 'the transport in use is shown')
  t.equal(proxy.refusedUpgrades, 3, 'three WebSocket attempts, all refused by the proxy')
  t.equal(upgrades, 0, 'none reached the server')
  for (const negocio of ['barberia-centro', 'clinica-dental-sol']) {
    const want = await databaseFigures(db.pool, negocio)
    await waitForFigures(page, negocio, want, WAIT_MS)
    t.same(await shownFigures(page, negocio), want, `${negocio}: the cards show the database's figures`)
  }

  await addCitas(db.pool, 'barberia-centro', 1, 'cancelada', 'today')
  const want = await databaseFigures(db.pool, 'barberia-centro')
  const sent = Date.now()
  await notify(srv.http, 'barberia-centro')
  await waitForFigures(page, 'barberia-centro', want, Math.max(1, 1500 - (Date.now() - sent)))
  const elapsed = Date.now() - sent
  t.ok(elapsed < 1500, `the change shows within 1.5 s over SSE (${elapsed} ms)`)
  t.equal(want.citas_hoy, '13')
  t.equal(want.citas_canceladas, '9')
  t.equal(await page.getAttribute('#pill', 'data-state'), 'connected')
  await page.screenshot({ path: join(artifacts, 'dashboard-sse.png'), fullPage: true })
  t.same(pageErrors, [], 'no script errors')
})
