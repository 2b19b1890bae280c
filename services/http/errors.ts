import { STATUS_CODES } from 'node:http'
import type { ErrorCode } from '../../protocol.js'

/** Stable error codes shared by the WebSocket protocol and the HTTP routes (defined in ../protocol.ts). */
export type { ErrorCode }

const httpStatus: Record<ErrorCode, number> = {
  bad_request: 400, invalid_channel: 400, unauthorized: 401, forbidden: 403, not_found: 404,
  limit: 429, rate_limited: 429, internal: 500, unavailable: 503
}

/** An error whose code and message are safe to show to the client. */
export class AppError extends Error {
  override name = 'AppError'
  readonly statusCode: number

  constructor (readonly code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.statusCode = httpStatus[code]
  }
}

export function isAppError (err: unknown): err is AppError {
  return err instanceof AppError
}

/** Answers with the JSON body of every HTTP error citas-live sends (the status's name from Node). */
export function replyError<R> (reply: { code: (status: number) => { send: (body: unknown) => R } }, statusCode: number, code: string, message: string, extra: Record<string, unknown> = {}): R {
  return reply.code(statusCode).send({ statusCode, code, error: STATUS_CODES[statusCode] ?? 'Error', message, ...extra })
}
