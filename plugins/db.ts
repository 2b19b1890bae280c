import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import pg, { type Pool } from 'pg'
import type {} from '@fastify/postgres' // the type of a host's `pg` decorator
import { Type, type Static } from '@sinclair/typebox'
import { provide } from './namespace.js'
import { Int, resolveOptions } from './options.js'

export const DbOptions = Type.Object({
  connectionString: Type.Optional(Type.String({ pattern: '^postgres(ql)?://', description: 'postgres:// URL. Omit it when the host app already registered @fastify/postgres or passes `pool`.' })),
  max: Int(1, 10, { description: 'Pool size.' }),
  statementTimeoutMs: Int(1, 5000, { description: 'Per-statement timeout in ms (server side, and client side 2 s later).' }),
  connectionTimeoutMs: Int(1, 5000, { description: 'How long to wait for a connection in ms.' })
})
export type DbPluginOptions = Partial<Static<typeof DbOptions>> & {
  /** An existing pool to share instead of opening one (the host app keeps ownership). */
  pool?: Pool
}

async function dbPlugin (fastify: FastifyInstance, options: DbPluginOptions) {
  const opts = resolveOptions('db', DbOptions, options, ['pool'])
  const shared = options.pool ?? (opts.connectionString === undefined && fastify.hasDecorator('pg') ? fastify.pg.pool : undefined)
  if (shared !== undefined) {
    provide(fastify, 'pool', shared)
    provide(fastify, 'poolConfig', undefined)
    return
  }
  if (opts.connectionString === undefined) throw new Error('citas-live db plugin: pass `connectionString` or `pool`, or register @fastify/postgres first')
  // A pool of its own, not @fastify/postgres: that decorates `pg`, which a host (or a second citas-live) may already have.
  const config: pg.PoolConfig = {
    connectionString: opts.connectionString,
    max: opts.max,
    connectionTimeoutMillis: opts.connectionTimeoutMs,
    statement_timeout: opts.statementTimeoutMs,
    // The server-side timeout cannot fire when the network itself hangs: the client gives up a bit later.
    query_timeout: opts.statementTimeoutMs + 2000,
    application_name: 'citas-live'
  }
  const pool = new pg.Pool(config)
  // An idle client losing its connection (database restart) must not crash the process.
  pool.on('error', (err) => fastify.log.warn({ err }, 'idle database connection lost'))
  fastify.addHook('onClose', async () => { await pool.end() })
  provide(fastify, 'pool', pool)
  provide(fastify, 'poolConfig', config)
}

export default fp(dbPlugin, { fastify: '5.x', name: 'citas-db' })
