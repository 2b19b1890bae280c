import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { createStatsService, isValidTimeZone, type StatsServiceOptions } from '../services/stats.js'

export interface StatsPluginOptions extends StatsServiceOptions {}

import { citasOf, provide } from './namespace.js'

async function statsPlugin (fastify: FastifyInstance, opts: StatsPluginOptions) {
  if (opts.timezone !== undefined && !isValidTimeZone(opts.timezone)) {
    throw new Error(`citas-live stats plugin: timezone ${JSON.stringify(opts.timezone)} is not an IANA time zone`)
  }
  provide(fastify, 'stats', createStatsService(citasOf(fastify).pool, opts))
}

export default fp(statsPlugin, { fastify: '5.x', name: 'citas-stats', dependencies: ['citas-db'] })
