/* eslint-disable no-new -- prom-client metrics register themselves in the registry they are made with */
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { once } from 'node:events'
import { createServer, type Server } from 'node:http'
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry, type GaugeConfiguration } from 'prom-client'
import { Type, type Static } from '@sinclair/typebox'
import { citasOf, provide } from './namespace.js'
import { resolveOptions } from './options.js'

/** A bare HTTP server answering GET /metrics with `scrape()`'s text (its own port, outside Fastify's routes). */
export function createMetricsServer (scrape: () => Promise<string>, contentType: string, log: { error: (obj: object, msg: string) => void }): Server {
  return createServer((req, res) => {
    if (req.method !== 'GET' || req.url !== '/metrics') {
      res.writeHead(404).end()
      return
    }
    scrape().then((text) => {
      res.writeHead(200, { 'content-type': contentType }).end(text)
    }, (err: unknown) => {
      log.error({ err }, 'metrics scrape failed')
      res.writeHead(500).end()
    })
  })
}

export const MetricsOptions = Type.Object({
  token: Type.Optional(Type.String({ minLength: 16, description: 'Serve GET /metrics on the app\'s own port (under its prefix), only to `Authorization: Bearer <token>`.' })),
  port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535, description: 'Serve GET /metrics on a port of its own, without auth: bind it to a private interface.' })),
  host: Type.String({ minLength: 1, default: '127.0.0.1', description: 'Address of that port.' }),
  processMetrics: Type.Boolean({ default: true, description: 'Collect Node\'s process metrics too (CPU, memory, event loop lag).' })
})
export type MetricsPluginOptions = Partial<Static<typeof MetricsOptions>> & {
  /** Given this registry, what GET /metrics answers instead of its text (server.ts: every worker's, added up). */
  scrape?: (register: Registry) => () => Promise<string>
}

async function metricsPlugin (fastify: FastifyInstance, options: MetricsPluginOptions) {
  const opts = resolveOptions('metrics', MetricsOptions, options, ['scrape'])
  const { hub, live, stats } = citasOf(fastify)
  const register = new Registry()
  if (opts.processMetrics) collectDefaultMetrics({ register, prefix: 'citas_live_' })

  // Figures the hub and the live-stats service already keep: read them at scrape time.
  const gaugeOf = (name: string, help: string, collect: (this: Gauge) => void, more: Partial<GaugeConfiguration<string>> = {}): void => {
    new Gauge({ name, help, registers: [register], collect, ...more })
  }
  gaugeOf('citas_live_connections', 'Open connections, by transport (websocket, sse)', function () {
    let sse = 0
    for (const conn of hub.connections) if (conn.transport === 'sse') sse++
    this.set({ transport: 'websocket' }, hub.connectionCount - sse)
    this.set({ transport: 'sse' }, sse)
  }, { labelNames: ['transport'] })
  gaugeOf('citas_live_subscriptions', 'Channel subscriptions over all connections', function () { this.set(hub.subscriptionCount) })
  gaugeOf('citas_live_channels', 'Channels with at least one local subscriber', function () { this.set(hub.channelCount) })
  gaugeOf('citas_live_snapshots', 'Negocios whose stats are cached', function () { this.set(live.cacheSize) })
  /** A counter that follows a running total, or a record of them by reason (labelled). */
  const counterFrom = (name: string, help: string, read: () => number | Readonly<Record<string, number>>, labelled = false): void => {
    const seen = new Map<string, number>()
    new Counter({
      name, help, labelNames: labelled ? ['reason'] : [], registers: [register],
      collect () {
        const now = read()
        for (const [reason, count] of Object.entries(typeof now === 'number' ? { '': now } : now)) {
          const prev = seen.get(reason) ?? 0
          if (count > prev) this.inc(labelled ? { reason } : {}, count - prev)
          seen.set(reason, count)
        }
      }
    })
  }
  counterFrom('citas_live_messages_sent_total', 'Messages written to sockets', () => hub.counters.sent)
  counterFrom('citas_live_bus_reconnects_total', 'Bus and LISTEN connections re-established after a loss', () => live.busReconnects)
  counterFrom('citas_live_stats_recomputes_total', 'Stats recomputes of one negocio started', () => live.runs)
  counterFrom('citas_live_stats_queries_total', 'Stats statements sent (one computes every negocio asked for at once)', () => stats.queryCount)
  counterFrom('citas_live_notifies_forwarded_total', 'Notifies the capture leader computed for this instance', () => live.forwards)
  counterFrom('citas_live_change_capture_changes_total', 'Negocio ids drained from the change table by this instance (summed over polls)', () => live.captureChanges)
  counterFrom('citas_live_change_capture_polls_total', 'Polls of the change table by this instance while it led (a leader whose count stops rising is stuck)', () => live.capturePolls)
  counterFrom('citas_live_change_capture_vacuums_total', 'Times this instance vacuumed the change table, so the space of drained rows is reused whatever autovacuum does', () => live.captureVacuums)
  counterFrom('citas_live_change_capture_compactions_total', 'Times this instance emptied the change table with TRUNCATE after a burst left its file large', () => live.captureCompactions)
  counterFrom('citas_live_messages_dropped_total', 'Messages not written to a socket, by reason', () => hub.counters.dropped, true)
  counterFrom('citas_live_connections_refused_total', 'WebSocket and SSE handshakes refused by a connection limit, by reason (capacity: the process is full, 503; user, ip: 429)', () => citasOf(fastify).limits.refused, true)
  counterFrom('citas_live_bus_messages_dropped_total', 'Bus messages refused (forged or corrupt), by reason', () => live.busDropped, true)
  gaugeOf('citas_live_change_capture_last_drain_age_seconds', 'How long ago any instance last completed a drain of the change table (as this instance knows it); above CHANGE_CAPTURE_STALL_MS capture counts as stalled', function () {
    const age = live.status().changeCapture.lastDrainAgeMs
    if (age !== null) this.set(age / 1000)
  }, { aggregator: 'min' })
  gaugeOf('citas_live_bus_up', '1 while the bus between instances carries messages both ways, 0 while it is down or being replaced (WORKERS: 1 only while it is up for every worker)', function () { this.set(live.status().bus.up ? 1 : 0) }, { aggregator: 'min' })
  gaugeOf('citas_live_change_capture_info', 'Change capture mode (table or off) and this instance\'s role (leader drains the change table, follower, down): 1 for the current pair (WORKERS: the workers in each)', function () {
    this.reset()
    const { mode, role } = live.status().changeCapture
    this.set({ mode, role }, 1)
  }, { labelNames: ['mode', 'role'] })

  const queryDuration = new Histogram({
    name: 'citas_live_stats_query_duration_seconds',
    help: 'Time of one stats query, by outcome',
    labelNames: ['outcome'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
    registers: [register]
  })
  stats.onQuery((seconds, outcome) => queryDuration.observe({ outcome }, seconds))

  const notifies = new Counter({ name: 'citas_live_notifies_total', help: 'POST /notify/cita calls by action and status', labelNames: ['action', 'status'], registers: [register] })
  const notifyDuration = new Histogram({
    name: 'citas_live_notify_to_broadcast_seconds',
    help: 'From a notify arriving to its stats written to every local subscriber (successful notifies)',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [register]
  })
  provide(fastify, 'metrics', register)
  provide(fastify, 'scrapeMetrics', options.scrape?.(register) ?? (async () => await register.metrics()))
  // The notify route tells each answered call (its action is 'invalid' unless the body passed validation).
  provide(fastify, 'observeNotify', (action, status, seconds) => {
    notifies.inc({ action, status: String(status) })
    if (status === 200) notifyDuration.observe(seconds)
  })

  if (opts.port === undefined) return
  const server = createMetricsServer(() => register.metrics(), register.contentType, fastify.log)
  fastify.addHook('onReady', async () => {
    server.listen(opts.port, opts.host)
    // Rejects on an 'error' (a port in use) before 'listening'.
    await once(server, 'listening')
  })
  fastify.addHook('onClose', async () => {
    if (server.listening) await new Promise(resolve => server.close(resolve))
  })
}

export default fp(metricsPlugin, { fastify: '5.x', name: 'citas-metrics', dependencies: ['citas-hub', 'citas-stats', 'citas-live-stats'] })
