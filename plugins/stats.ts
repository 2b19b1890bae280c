import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { Type, type Static } from '@sinclair/typebox'
import { createStatsService } from '../services/live/stats.js'
import { citasOf, provide } from './namespace.js'
import { resolveOptions } from './options.js'

export const StatsOptions = Type.Object({
  timezone: Type.String({ format: 'iana-time-zone', default: 'UTC', description: 'IANA zone for "today" when the business has no zona_horaria of its own.' })
})
export type StatsPluginOptions = Partial<Static<typeof StatsOptions>> & {
  /** Clock, injectable for tests of the day boundary. */
  now?: () => Date
}

async function statsPlugin (fastify: FastifyInstance, options: StatsPluginOptions) {
  const { timezone } = resolveOptions('stats', StatsOptions, options, ['now'])
  provide(fastify, 'stats', createStatsService(citasOf(fastify).pool, { timezone, now: options.now }))
}

export default fp(statsPlugin, { fastify: '5.x', name: 'citas-stats', dependencies: ['citas-db'] })
