import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import pg, { type Pool } from 'pg'
import type {} from '@fastify/postgres' // the type of a host's `pg` decorator
import { provide } from './namespace.js'

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

async function dbPlugin (fastify: FastifyInstance, opts: DbPluginOptions) {
  if (opts.pool !== undefined) {
    provide(fastify, 'pool', opts.pool)
    return
  }
  if (opts.connectionString === undefined) {
    if (fastify.hasDecorator('pg')) {
      provide(fastify, 'pool', fastify.pg.pool)
      return
    }
    throw new Error('citas-live db plugin: pass `connectionString` or `pool`, or register @fastify/postgres first')
  }
  // A pool of its own, not @fastify/postgres: that one decorates `pg`, which a host app with its own
  // @fastify/postgres already has (and a second citas-live registration would too).
  const pool = new pg.Pool({
    connectionString: opts.connectionString,
    max: opts.max ?? 10,
    connectionTimeoutMillis: opts.connectionTimeoutMs ?? 5000,
    statement_timeout: opts.statementTimeoutMs ?? 5000,
    // The server-side timeout cannot fire when the network itself hangs: the client gives up a bit later.
    query_timeout: (opts.statementTimeoutMs ?? 5000) + 2000,
    application_name: 'citas-live'
  })
  // An idle client losing its connection (database restart) must not crash the process.
  pool.on('error', (err) => fastify.log.warn({ err }, 'idle database connection lost'))
  fastify.addHook('onClose', async () => { await pool.end() })
  provide(fastify, 'pool', pool)
}

export default fp(dbPlugin, { fastify: '5.x', name: 'citas-db' })
