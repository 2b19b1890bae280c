import fp from 'fastify-plugin'
import fastifyPostgres from '@fastify/postgres'
import type { FastifyInstance } from 'fastify'
import type { Pool } from 'pg'

export interface DbPluginOptions {
  /** postgres:// URL. Omit it when the host app already registered @fastify/postgres or passes `pool`. */
  connectionString?: string
  /** An existing pool to share instead of opening one (the host app keeps ownership). */
  pool?: Pool
  /** Pool size; default 10. */
  max?: number
  /** Per-statement timeout in ms; default 5000. */
  statementTimeoutMs?: number
  /** How long to wait for a connection in ms; default 5000. */
  connectionTimeoutMs?: number
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The pool citas-live queries through (its own, the host's, or @fastify/postgres's). */
    citasPool: Pool
  }
}

async function dbPlugin (fastify: FastifyInstance, opts: DbPluginOptions) {
  if (opts.pool !== undefined) {
    fastify.decorate('citasPool', opts.pool)
    return
  }
  if (opts.connectionString === undefined) {
    if (fastify.hasDecorator('pg')) {
      fastify.decorate('citasPool', fastify.pg.pool)
      return
    }
    throw new Error('citas-live db plugin: pass `connectionString` or `pool`, or register @fastify/postgres first')
  }
  await fastify.register(fastifyPostgres, {
    connectionString: opts.connectionString,
    max: opts.max ?? 10,
    connectionTimeoutMillis: opts.connectionTimeoutMs ?? 5000,
    statement_timeout: opts.statementTimeoutMs ?? 5000,
    // The server-side timeout cannot fire when the network itself hangs: the client gives up a bit later.
    query_timeout: (opts.statementTimeoutMs ?? 5000) + 2000,
    application_name: 'citas-live'
  })
  const pool = fastify.pg.pool
  // An idle client losing its connection (database restart) must not crash the process.
  pool.on('error', (err) => fastify.log.warn({ err }, 'idle database connection lost'))
  fastify.decorate('citasPool', pool)
}

export default fp(dbPlugin, { fastify: '5.x', name: 'citas-db' })
