import type { FastifyInstance } from 'fastify'
import type { Pool, PoolConfig } from 'pg'
import type { Registry } from 'prom-client'
import type { Hub } from '../services/live/hub.js'
import type { StatsService } from '../services/live/stats.js'

/** Per-registration state: each plugin fills its field (typed in its own file), routes read it, a host sees it only through `decorator`. */
export interface CitasLive {
  /** The pool citas-live queries through (its own, the host's, or @fastify/postgres's). */
  pool: Pool
  /** The settings citas-live built its own pool from (the database session copies them); undefined for a host's pool. */
  poolConfig: PoolConfig | undefined
  stats: StatsService
  hub: Hub
  /** This registration's Prometheus registry (never the global one). */
  metrics: Registry
  /** What GET /metrics answers: this registry's text, or the whole cluster's (WORKERS). */
  scrapeMetrics: () => Promise<string>
  /** Counts an answered /notify/cita call (absent with metrics off). */
  observeNotify?: (action: string, status: number, seconds: number) => void
}

/** The key of the namespace on a Fastify instance: a symbol, so it can clash with no host decorator. */
export const kCitasLive: unique symbol = Symbol('citas-live')

declare module 'fastify' {
  interface FastifyInstance {
    [kCitasLive]: CitasLive
  }
}

/** The namespace of the registration `fastify` belongs to, made on first use; fields of plugins not registered (yet) are missing. */
export function citasOf (fastify: FastifyInstance): CitasLive {
  if (!fastify.hasDecorator(kCitasLive)) fastify.decorate(kCitasLive, {} as unknown as CitasLive)
  return fastify[kCitasLive]
}

/** Sets a plugin's field once: a second registration of the same plugin in one scope is a mistake. */
export function provide<K extends keyof CitasLive> (fastify: FastifyInstance, key: K, value: CitasLive[K]): void {
  const ns = citasOf(fastify)
  if (Object.hasOwn(ns, key)) throw new Error(`citas-live: ${String(key)} is already registered in this scope (register citas-live again in its own scope, e.g. under another prefix)`)
  ns[key] = value
}
