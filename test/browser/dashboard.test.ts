import t, { type Test } from 'tap'
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type pg from 'pg'
import { chromium, type Browser, type Page } from 'playwright-core'
import type { FastifyInstance } from 'fastify'
import { noUpgradeProxy } from '../fixtures/no-upgrade-proxy.js'
import { addNegocio, build, listen, listenAgain, listenRestartable, serviceToken, sign, testDatabase, waitFor, WAIT_MS, type TestDatabase } from '../helper.js'

const root = new URL('../../', import.meta.url).pathname
const artifacts = join(root, 'test', 'artifacts')
const executablePath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

// Without a browser these tests are skipped, saying why in the summary; CI installs Chromium and
// fails on any skipped test.
const NO_CHROMIUM = existsSync(executablePath) ? false : `no Chromium at ${executablePath}: install the chromium package (.ci/run does), or set CHROMIUM_PATH`

// Page functions run in the browser; this file is typechecked without the DOM library.
declare const document: any
declare const window: any

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

async function waitForPill (page: Page, text: string, timeout = WAIT_MS): Promise<void> {
  await page.waitForFunction((want) => document.getElementById('pill')?.textContent === want, text, { timeout })
}

async function notify (http: string, negocio: string): Promise<void> {
  const res = await fetch(`${http}/notify/cita`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${serviceToken()}` },
    body: JSON.stringify({ negocio_id: negocio, action: 'created' })
  })
  if (res.status !== 200) throw new Error(`notify: ${res.status} ${await res.text()}`)
}

/** The built dashboard and the browser, made by the first test that needs them. */
let ready: Promise<{ dashboard: string, browser: Browser }> | undefined
async function setup (): Promise<{ dashboard: string, browser: Browser }> {
  ready ??= (async () => {
    const dashboard = await mkdtemp(join(tmpdir(), 'citas-live-dashboard-'))
    t.teardown(() => rm(dashboard, { recursive: true, force: true }))
    await promisify(execFile)(process.execPath, [join(root, 'scripts/build-dashboard.mjs'), dashboard], { cwd: root })
    await mkdir(artifacts, { recursive: true })
    const browser = await chromium.launch({
      executablePath,
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run']
    })
    t.teardown(() => browser.close())
    return { dashboard, browser }
  })()
  return await ready
}

/**
 * A server on a database of its own, counting WebSocket handshakes. `restartable`: on a port that a
 * later server can take again, given as `port`, once this one is closed.
 */
async function server (t: Test, database: TestDatabase, opts: { restartable?: boolean, port?: number } = {}) {
  const { dashboard } = await setup()
  const { app } = await build(t, { database, dashboard: { root: dashboard } })
  let urls: Awaited<ReturnType<typeof listen>>
  if (opts.port !== undefined) {
    await listenAgain(app, opts.port)
    urls = { http: `http://127.0.0.1:${opts.port}`, ws: `ws://127.0.0.1:${opts.port}`, port: opts.port }
  } else {
    urls = opts.restartable === true ? await listenRestartable(app) : await listen(app)
  }
  const counts = { handshakes: 0 }
  app.server.on('upgrade', () => { counts.handshakes++ })
  return { app: app as FastifyInstance, ...urls, counts }
}

/** A database of its own with the two demo businesses and their citas, past and today. */
async function demoDatabase (t: Test): Promise<TestDatabase> {
  const db = await testDatabase(t)
  await addNegocio(db.pool, 'barberia-centro')
  await addNegocio(db.pool, 'clinica-dental-sol')
  await addCitas(db.pool, 'barberia-centro', 140, 'atendida', 'past')
  await addCitas(db.pool, 'barberia-centro', 8, 'cancelada', 'past')
  await addCitas(db.pool, 'barberia-centro', 12, 'confirmada', 'today')
  await addCitas(db.pool, 'clinica-dental-sol', 51, 'atendida', 'past')
  await addCitas(db.pool, 'clinica-dental-sol', 4, 'cancelada', 'past')
  await addCitas(db.pool, 'clinica-dental-sol', 7, 'pendiente', 'today')
  return db
}

async function newPage (t: Test, viewport = { width: 1000, height: 470 }): Promise<{ page: Page, pageErrors: Error[] }> {
  const { browser } = await setup()
  const context = await browser.newContext({ viewport, locale: 'es-ES', timezoneId: 'UTC' })
  t.teardown(() => context.close())
  const page = await context.newPage()
  const pageErrors: Error[] = []
  page.on('pageerror', (err) => pageErrors.push(err))
  return { page, pageErrors }
}

t.test('the dashboard shows the database, follows notify, and rides out a server restart', { skip: NO_CHROMIUM }, async (t) => {
  const db = await demoDatabase(t)
  const first = await server(t, db, { restartable: true })
  const token = sign({ sub: 'demo-user', negocios: ['barberia-centro', 'clinica-dental-sol'] })
  const { page, pageErrors } = await newPage(t)

  await page.goto(`${first.http}/?token=${token}`)
  await waitForPill(page, 'Conectado')
  t.notOk(new URL(page.url()).searchParams.has('token'), 'the token is removed from the address bar')
  t.equal(await page.getAttribute('#transport', 'data-transport'), 'websocket', 'over WebSocket when nothing is in the way')
  for (const negocio of ['barberia-centro', 'clinica-dental-sol']) {
    const want = await databaseFigures(db.pool, negocio)
    await waitForFigures(page, negocio, want, WAIT_MS)
    t.same(await shownFigures(page, negocio), want, `${negocio}: the cards show the database's figures`)
  }
  t.match(await page.textContent('#last-update'), /^\d{1,2}:\d{2}:\d{2}$/, 'time of the last update')
  await page.screenshot({ path: join(artifacts, 'dashboard-connected.png'), fullPage: true })

  await addCitas(db.pool, 'barberia-centro', 1, 'pendiente', 'today')
  await notify(first.http, 'barberia-centro')
  const want = await databaseFigures(db.pool, 'barberia-centro')
  await waitForFigures(page, 'barberia-centro', want, WAIT_MS)
  t.same(await shownFigures(page, 'barberia-centro'), want, 'the card shows the new figure')
  t.equal(want.citas_hoy, '13')
  await page.screenshot({ path: join(artifacts, 'dashboard-updated.png'), fullPage: true })

  await first.app.close()
  await waitForPill(page, 'Reconectando')
  t.equal(await page.getAttribute('#pill', 'data-state'), 'reconnecting')
  await page.screenshot({ path: join(artifacts, 'dashboard-reconnecting.png'), fullPage: true })

  await addCitas(db.pool, 'barberia-centro', 2, 'cancelada', 'today')
  const second = await server(t, db, { port: first.port })
  await waitForPill(page, 'Conectado', 30_000)
  const refreshed = await databaseFigures(db.pool, 'barberia-centro')
  await waitForFigures(page, 'barberia-centro', refreshed, WAIT_MS)
  t.same(await shownFigures(page, 'barberia-centro'), refreshed, 'figures refreshed from the snapshot after the reconnect')
  t.equal(refreshed.citas_canceladas, '10')
  t.equal(second.counts.handshakes, 1, 'one handshake to come back')
  await page.screenshot({ path: join(artifacts, 'dashboard-reconnected.png'), fullPage: true })
  t.same(pageErrors, [], 'no script errors')
})

t.test('a refused token: a clear message, the token form, and no retry storm', { skip: NO_CHROMIUM }, async (t) => {
  const db = await testDatabase(t)
  await addNegocio(db.pool, 'n1')
  const srv = await server(t, db)
  const { page, pageErrors } = await newPage(t)
  const forged = sign({ negocio_id: 'n1' }, { secret: 'not-the-server-secret-0123456789' })

  await page.goto(`${srv.http}/?token=${forged}`)
  await page.waitForSelector('#message:not([hidden])', { timeout: 10_000 })
  t.match(await page.textContent('#message'), /rechazó el token: la firma no es válida/)
  t.equal(await page.textContent('#pill'), 'Desconectado')
  t.ok(await page.isVisible('#token-form'), 'the form asks for another token')
  await page.screenshot({ path: join(artifacts, 'dashboard-bad-token.png'), fullPage: true })
  await new Promise(resolve => setTimeout(resolve, 3000))
  t.equal(srv.counts.handshakes, 1, 'one handshake in 3 s: no retries with the dead token')

  await page.fill('#token-input', sign({ negocio_id: 'n1' }))
  await page.click('#token-form button')
  await waitForPill(page, 'Conectado')
  await waitForFigures(page, 'n1', { citas_hoy: '0', total_citas: '0', citas_completadas: '0', citas_canceladas: '0' }, WAIT_MS)
  t.ok(await page.isHidden('#message'))
  t.ok(await page.isHidden('#token-form'))
  t.same(pageErrors, [])
})

t.test('another origin: the client\'s token probe can read why the token was refused, only from allowed origins', { skip: NO_CHROMIUM }, async (t) => {
  const db = await testDatabase(t)
  await addNegocio(db.pool, 'n1')
  const forged = sign({ negocio_id: 'n1' }, { secret: 'not-the-server-secret-0123456789' })
  // What the client SDK's probe does after a failed handshake: GET the /ws URL with the token.
  const probe = async (page: Page, target: string): Promise<unknown> => await page.evaluate(async ([url, token]) => {
    try {
      const res = await fetch(url, { headers: { authorization: `Bearer ${token}` } })
      return { status: res.status, body: await res.json() }
    } catch (err: any) {
      return { failed: String(err) }
    }
  }, [target, forged] as const)

  // Any origin allowed (no ALLOWED_ORIGINS): a page on localhost asks 127.0.0.1, another origin.
  const open = await server(t, db)
  const { page } = await newPage(t)
  await page.goto(`http://localhost:${open.port}/health`)
  t.same(await probe(page, `${open.http}/ws`), {
    status: 401,
    body: { statusCode: 401, code: 'unauthorized', error: 'Unauthorized', message: 'invalid token signature' }
  })
  t.equal(open.counts.handshakes, 0, 'a plain GET, no upgrade')

  // An allow-list without this page's origin (still http://localhost:<port>): the browser refuses to hand over the answer.
  const { app } = await build(t, { database: db, dashboard: false, limits: { allowedOrigins: ['https://app.example.com'] } })
  const closed = await listen(app)
  t.match(await probe(page, `${closed.http}/ws`), { failed: /TypeError: Failed to fetch/ })
})

t.test('not a JWT at all: the message without any handshake', { skip: NO_CHROMIUM }, async (t) => {
  const db = await testDatabase(t)
  const srv = await server(t, db)
  const { page } = await newPage(t)
  await page.goto(`${srv.http}/?token=hola`)
  await page.waitForSelector('#message:not([hidden])')
  t.match(await page.textContent('#message'), /no es un token JWT/)
  t.equal(srv.counts.handshakes, 0)
})

t.test('readable on a phone: two cards a row and no sideways scrolling', { skip: NO_CHROMIUM }, async (t) => {
  const db = await testDatabase(t)
  await addNegocio(db.pool, 'barberia-centro')
  await addCitas(db.pool, 'barberia-centro', 3, 'atendida', 'today')
  const srv = await server(t, db)
  const { page } = await newPage(t, { width: 390, height: 844 })
  await page.goto(`${srv.http}/?token=${sign({ negocio_id: 'barberia-centro' })}`)
  await waitForPill(page, 'Conectado')
  await waitForFigures(page, 'barberia-centro', await databaseFigures(db.pool, 'barberia-centro'), WAIT_MS)
  const layout = await page.evaluate(() => {
    const cards = [...document.querySelectorAll('.card')].slice(0, 4).map((c: any) => c.getBoundingClientRect())
    return { scrollWidth: document.documentElement.scrollWidth, width: window.innerWidth, tops: cards.map((r: any) => Math.round(r.top)) }
  })
  t.ok(layout.scrollWidth <= layout.width, 'no horizontal scroll')
  t.equal(new Set(layout.tops).size, 2, 'four cards in two rows')
  await page.screenshot({ path: join(artifacts, 'dashboard-phone.png'), fullPage: true })
  await waitFor(() => srv.counts.handshakes === 1)
})

// Behind a proxy that lets plain HTTP through but refuses every WebSocket upgrade, the dashboard
// falls back to Server-Sent Events by itself and stays live.
t.test('behind a proxy that refuses WebSocket upgrades, the dashboard switches to SSE and shows live figures', { skip: NO_CHROMIUM }, async (t) => {
  const db = await demoDatabase(t)
  const srv = await server(t, db)
  const proxy = await noUpgradeProxy({ host: '127.0.0.1', port: srv.port })
  t.teardown(() => proxy.close())
  const { page, pageErrors } = await newPage(t)
  const token = sign({ sub: 'demo-user', negocios: ['barberia-centro', 'clinica-dental-sol'] })

  await page.goto(`${proxy.http}/?token=${token}`)
  // Three refused upgrades with their backoff delays (at most 0.5 + 1 + 2 s), then the stream.
  await page.waitForFunction(() => document.getElementById('pill')?.textContent === 'Conectado' &&
    document.getElementById('transport')?.dataset.transport === 'sse', undefined, { timeout: WAIT_MS })
  t.equal(await page.textContent('#transport'), 'vía SSE', 'the transport in use is shown')
  t.equal(proxy.refusedUpgrades, 3, 'three WebSocket attempts, all refused by the proxy')
  t.equal(srv.counts.handshakes, 0, 'none reached the server')
  for (const negocio of ['barberia-centro', 'clinica-dental-sol']) {
    const want = await databaseFigures(db.pool, negocio)
    await waitForFigures(page, negocio, want, WAIT_MS)
    t.same(await shownFigures(page, negocio), want, `${negocio}: the cards show the database's figures`)
  }

  await addCitas(db.pool, 'barberia-centro', 1, 'cancelada', 'today')
  const want = await databaseFigures(db.pool, 'barberia-centro')
  await notify(srv.http, 'barberia-centro')
  await waitForFigures(page, 'barberia-centro', want, WAIT_MS)
  t.same(await shownFigures(page, 'barberia-centro'), want, 'the change shows over SSE')
  t.equal(want.citas_hoy, '13')
  t.equal(want.citas_canceladas, '9')
  t.equal(await page.getAttribute('#pill', 'data-state'), 'connected')
  await page.screenshot({ path: join(artifacts, 'dashboard-sse.png'), fullPage: true })
  t.same(pageErrors, [], 'no script errors')
})
