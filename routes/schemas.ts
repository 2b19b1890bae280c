import { Type, type Static } from '@sinclair/typebox'
import { NEGOCIO_ID_PATTERN } from '../services/protocol.js'

export const NotifyAction = Type.Union([
  Type.Literal('created'),
  Type.Literal('updated'),
  Type.Literal('deleted'),
  Type.Literal('status_changed')
])

/** POST /notify/cita body. Extra fields are accepted and ignored (the REST API may send more). */
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
  /** Local sockets the new stats were written to. */
  delivered: Type.Integer(),
  stats: StatsSchema
})
export type NotifyReply = Static<typeof NotifyReply>

export const ErrorReply = Type.Object({
  statusCode: Type.Integer(),
  code: Type.String(),
  error: Type.String(),
  message: Type.String()
})
