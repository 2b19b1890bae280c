import { Type, type Static } from '@sinclair/typebox'
import type { FastifySchema } from 'fastify'
import { NEGOCIO_ID_PATTERN } from '../services/live/messages.js'

/** What the REST API says it did; the same list labels the notify metrics. */
export const NOTIFY_ACTIONS = ['created', 'updated', 'deleted', 'status_changed'] as const
/** An enum, not a union of literals: a bad value gets one clear message. */
export const NotifyAction = Type.Unsafe<typeof NOTIFY_ACTIONS[number]>({ type: 'string', enum: [...NOTIFY_ACTIONS] })

/** Extra fields are accepted and ignored (the REST API may send more). */
export const NotifyBody = Type.Object({
  negocio_id: Type.String({ pattern: NEGOCIO_ID_PATTERN, description: 'Business whose stats changed' }),
  action: NotifyAction
})
export type NotifyBody = Static<typeof NotifyBody>

export const StatsSchema = Type.Object({
  negocio_id: Type.String(),
  citas_hoy: Type.Integer(),
  total_citas: Type.Integer(),
  citas_completadas: Type.Integer(),
  citas_canceladas: Type.Integer(),
  timestamp: Type.Integer({ description: 'Unix seconds' })
})

export const NotifyReply = Type.Object({
  ok: Type.Literal(true),
  negocio_id: Type.String(),
  action: NotifyAction,
  /** Local sockets written to (0 when they already had these figures). */
  delivered: Type.Integer(),
  bus: Type.Union([Type.Literal('sent'), Type.Literal('unreachable'), Type.Literal('none')]),
  stats: StatsSchema
}, { description: 'Recomputed and pushed to the subscribers of estadisticas:<negocio_id>' })
export type NotifyReply = Static<typeof NotifyReply>

export const ErrorReply = Type.Object({ statusCode: Type.Integer(), code: Type.String(), error: Type.String(), message: Type.String() })

export const HealthReply = Type.Object({ status: Type.Literal('ok') }, { description: 'The process runs' })

export const LiveStatusSchema = {
  bus: Type.Object({
    kind: Type.Union([Type.Literal('postgres'), Type.Literal('redis'), Type.Literal('memory')]),
    up: Type.Boolean({ description: 'false while the bus connection is down or being replaced: other instances\' updates are not heard meanwhile' })
  }),
  change_capture: Type.Object({
    mode: Type.Union([Type.Literal('table'), Type.Literal('failing'), Type.Literal('off')], { description: 'failing: the change table cannot be read (run the migrations)' }),
    role: Type.Union([Type.Literal('leader'), Type.Literal('follower'), Type.Literal('down')], { description: 'leader: this instance drains the change table' }),
    stalled: Type.Boolean({ description: 'true when no instance completed a drain of the change table for longer than CHANGE_CAPTURE_STALL_MS (15 s): direct SQL writes do not reach dashboards meanwhile' }),
    last_drain_age_ms: Type.Union([Type.Integer({ minimum: 0 }), Type.Null()], { description: 'How long ago an instance last completed a drain (null: change capture off)' })
  })
}

export const ReadyReply = Type.Object({
  status: Type.Union([Type.Literal('ready'), Type.Literal('degraded')], { description: 'degraded: the database answers, but the bus is down or change capture stalled' }),
  reasons: Type.Optional(Type.Array(Type.String(), { description: 'Why it is degraded, one sentence each' })),
  ...LiveStatusSchema
}, { description: 'The database answers' })

export const NotReadyReply = Type.Object({
  status: Type.Literal('unavailable'),
  code: Type.String(),
  message: Type.String(),
  ...LiveStatusSchema
}, { description: 'The database does not answer' })

export const SECURITY_SCHEMES = {
  bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: 'HS256 JWT signed with JWT_SECRET' },
  tokenQuery: { type: 'apiKey', in: 'query', name: 'token', description: 'The same JWT in ?token= (WebSocket clients of the Go server)' }
} as const

export const notifyDocs: FastifySchema = {
  summary: 'Recompute and push the stats of one negocio',
  description: 'Called by the REST API after it creates, updates, cancels or deletes a cita. Needs a service token ' +
    '(role claim = JWT_SERVICE_ROLE). Idempotent: subscribers get figures only when they changed.',
  tags: ['notify'],
  security: [{ bearerAuth: [] }]
}

export const healthDocs: FastifySchema = { summary: 'Liveness: the process runs', tags: ['health'] }
export const readyDocs: FastifySchema = { summary: 'Readiness: the database answers', tags: ['health'] }

/** Documentation only: the handshake hook reads the token and answers 401 itself. */
export const wsDocs: FastifySchema = {
  summary: 'WebSocket upgrade for live stats (protocol: docs/asyncapi.yaml)',
  description: 'Send `Connection: Upgrade`, `Upgrade: websocket` and a token (Authorization: Bearer, ?token=, or ' +
    '`Sec-WebSocket-Protocol: bearer, <token>`). Answers 101 Switching Protocols, or 401 with a JSON body and no upgrade. ' +
    'After the upgrade the client sends subscribe/unsubscribe/ping and receives subscribed/unsubscribed/pong/stats/error.',
  tags: ['websocket'],
  security: [{ bearerAuth: [] }, { tokenQuery: [] }],
  response: {
    101: { type: 'null', description: 'Switching Protocols: the connection is now a WebSocket' },
    401: { ...ErrorReply, description: 'Missing, malformed, expired or wrongly signed token; no upgrade' }
  }
}

export const ChannelErrorReply = Type.Object({
  ...ErrorReply.properties,
  channel: Type.Optional(Type.String({ description: 'The refused channel (at most 80 characters of it)' }))
})

/** The querystring is validated as strings only; the route checks the channels and the token. */
export const sseDocs: FastifySchema = {
  summary: 'Live stats as Server-Sent Events (the fallback where WebSocket cannot go)',
  description: 'Opens a `text/event-stream` of the named channels. For each channel its current stats at once, then every ' +
    'change: `event: stats`, `id: <opaque version>`, `data: <the data object of the WebSocket stats message>`. Also ' +
    '`event: error` (a channel ended or not loadable: `{code, message, channel}`), `event: token_expiring` ' +
    '(`{expires_at}`), and `event: close` (`{code, reason}`, the WebSocket close codes) right before the server ends the ' +
    'stream. A comment line is the heartbeat. Reconnect with `Last-Event-ID` to get no event for channels whose figures ' +
    'are unchanged since that id.',
  tags: ['sse'],
  security: [{ bearerAuth: [] }, { tokenQuery: [] }],
  querystring: Type.Object({
    channels: Type.String({ description: 'Comma-separated channels, estadisticas:<negocio_id>, at most WS_MAX_SUBSCRIPTIONS', examples: ['estadisticas:n1,estadisticas:n2'] }),
    token: Type.Optional(Type.String({ description: 'The JWT, for EventSource (which cannot send headers); prefer Authorization: Bearer' }))
  }, { additionalProperties: true }),
  headers: Type.Object({
    'last-event-id': Type.Optional(Type.String({ description: 'The id of the last stats event received (EventSource sends it when it reconnects)' }))
  }),
  response: {
    200: { type: 'string', description: 'text/event-stream, open until the client leaves, the token expires or the server shuts down' },
    400: { ...ChannelErrorReply, description: 'No channels (bad_request), a malformed one (invalid_channel, named in `channel`), or more than the limit (limit)' },
    401: { ...ErrorReply, description: 'Missing, malformed, expired or wrongly signed token' },
    403: { ...ChannelErrorReply, description: 'A foreign Origin, or a channel the token does not allow (named in `channel`)' },
    429: { ...ErrorReply, description: 'Over the per-user or per-IP connection limit (WebSocket and SSE count together)' }
  }
}
