import t from 'tap'
import { build, handshake, listen, serviceToken } from '../helper.js'

t.test('GET /documentation/json describes the HTTP routes from their schemas', async (t) => {
  const { app } = await build(t, { openapi: true })
  const res = await app.inject('/documentation/json')
  t.equal(res.statusCode, 200)
  const doc = res.json()
  t.match(doc, { openapi: /^3\./, info: { title: 'citas-live' } })
  t.same(Object.keys(doc.paths).sort(), ['/health', '/notify/cita', '/ready', '/sse', '/ws'], 'every route, nothing internal')
  t.match(doc.components.securitySchemes.bearerAuth, { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' })

  const notify = doc.paths['/notify/cita'].post
  t.same(notify.security, [{ bearerAuth: [] }])
  const body = notify.requestBody.content['application/json'].schema
  t.same(body.required, ['negocio_id', 'action'])
  t.equal(body.properties.negocio_id.pattern, '^[A-Za-z0-9_-]{1,64}$')
  t.same([...body.properties.action.enum].sort(), ['created', 'deleted', 'status_changed', 'updated'])
  const ok = notify.responses['200'].content['application/json'].schema
  t.same(Object.keys(ok.properties.stats.properties).sort(),
    ['citas_canceladas', 'citas_completadas', 'citas_hoy', 'negocio_id', 'timestamp', 'total_citas'])
  t.ok(notify.responses['4XX'] ?? notify.responses['4xx'], 'documents the error replies')

  t.match(doc.paths['/health'].get.responses['200'].content['application/json'].schema, { properties: { status: {} } })
  t.ok(doc.paths['/ready'].get.responses['503'], '/ready documents 503')

  const ws = doc.paths['/ws'].get
  t.match(ws.summary, /WebSocket/)
  t.match(ws.responses['101'], { description: /Switching Protocols/ })
  t.notOk(ws.responses['101'].content, 'no body')
  t.ok(ws.responses['401'], 'the refused handshake')
  t.same(ws.security, [{ bearerAuth: [] }, { tokenQuery: [] }])

  const sse = doc.paths['/sse'].get
  t.match(sse.summary, /Server-Sent Events/)
  t.same(sse.security, [{ bearerAuth: [] }, { tokenQuery: [] }])
  // ?token= is the tokenQuery security scheme, not a parameter of its own.
  t.same(sse.parameters.filter((p: any) => p.in === 'query').map((p: any) => [p.name, p.required]), [['channels', true]])
  t.ok(sse.parameters.some((p: any) => p.in === 'header' && p.name === 'last-event-id'), 'Last-Event-ID documented')
  t.same(Object.keys(sse.responses).sort(), ['200', '400', '401', '403', '429'])
  t.match(sse.responses['200'], { description: /text\/event-stream/ })
})

t.test('the documentation changes nothing at runtime and lives under the prefix', async (t) => {
  const { app } = await build(t, { openapi: true, prefix: '/live' })
  t.equal((await app.inject('/live/documentation/json')).statusCode, 200)
  t.equal((await app.inject('/documentation/json')).statusCode, 404)
  t.same(Object.keys((await app.inject('/live/documentation/json')).json().paths).sort(),
    ['/live/health', '/live/notify/cita', '/live/ready', '/live/sse', '/live/ws'])
  // The /ws schema is documentation only: the handshake still answers 401 with its JSON body.
  const { ws } = await listen(app)
  t.match(await handshake(`${ws}/live/ws`), { status: 401, body: { code: 'unauthorized', message: 'missing token' } })
  const res = await app.inject({ method: 'POST', url: '/live/notify/cita', headers: { authorization: `Bearer ${serviceToken()}` }, payload: { negocio_id: 'nope', action: 'created' } })
  t.match(res.json(), { statusCode: 404, code: 'not_found' })
})

t.test('off by default; Swagger UI behind an option', async (t) => {
  const plain = await build(t)
  t.equal((await plain.app.inject('/documentation/json')).statusCode, 404, 'an embedding app gets no extra routes')

  const { app } = await build(t, { openapi: { ui: true } })
  t.equal((await app.inject('/documentation/json')).statusCode, 200)
  const ui = await app.inject('/documentation/')
  t.equal(ui.statusCode, 200)
  t.match(ui.headers['content-type'], /html/)
})
