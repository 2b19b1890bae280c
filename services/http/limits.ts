import { readdirSync, readFileSync } from 'node:fs'
import { BlockList, isIP } from 'node:net'
import type { Access } from '../live/hub.js'

/** Per-key connection counts (per user, per IP). A limit of 0 turns the count off. */
export function createConnectionCounter (max: number) {
  const counts = new Map<string, number>()
  const count = (key: string): number => counts.get(key) ?? 0
  const full = (key: string): boolean => max > 0 && count(key) >= max
  return {
    /** False when the limit is 0: callers need not even compute the key. */
    enabled: max > 0,
    count,
    full,
    acquire (key: string): boolean {
      if (full(key)) return false
      if (max > 0) counts.set(key, count(key) + 1)
      return true
    },
    release (key: string): void {
      if (max === 0) return
      const n = count(key) - 1
      if (n <= 0) counts.delete(key)
      else counts.set(key, n)
    }
  }
}

function normalizeOrigin (value: string): string | null {
  try {
    const { protocol, origin } = new URL(value)
    return protocol === 'http:' || protocol === 'https:' ? origin : null
  } catch {
    return null
  }
}

/** Against cross-site WebSocket hijacking. No Origin header is allowed: browsers always send it, and a token is still needed. */
export function createOriginCheck (allowed: readonly string[] | undefined): (origin: string | undefined) => boolean {
  if (allowed === undefined) return () => true
  const set = new Set(allowed.map((entry) => {
    const origin = normalizeOrigin(entry)
    if (origin === null) throw new Error(`${JSON.stringify(entry)} is not an http(s) origin like https://app.example.com`)
    return origin
  }))
  return (origin) => origin === undefined || set.has(normalizeOrigin(origin) ?? '')
}

/** The per-user limit's key: `sub`, else the exact rights granted, so leaving `sub` out does not escape the limit. */
export function userKeyOf (access: Pick<Access, 'sub' | 'all' | 'negocios'>): string {
  if (access.sub !== undefined) return `sub:${access.sub}`
  return access.all ? 'grants:*' : `grants:${[...access.negocios].sort().join(',')}`
}

// Behind trusted proxies, the rightmost X-Forwarded-For entry no proxy added (a client's own sit further left); a non-address stops.
export function clientAddress (peer: string | undefined, forwarded: string | string[] | undefined, isProxy: (address: string) => boolean): string {
  let current = peer ?? ''
  if (forwarded === undefined || !isProxy(current)) return current
  const hops = (Array.isArray(forwarded) ? forwarded.join(',') : forwarded).split(',')
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = (hops[i] as string).trim()
    if (isIP(hop) === 0) return current
    current = hop
    if (!isProxy(hop)) return hop
  }
  return current
}

/** A matcher for addresses and CIDRs (throws on anything else); `::ffff:10.1.2.3` matches the IPv4 networks. */
export function createNetworkMatcher (networks: readonly string[]): (address: string | undefined) => boolean {
  const list = new BlockList()
  for (const entry of networks) {
    const [address, bits, extra] = entry.trim().split('/')
    const family = isIP(address ?? '')
    const prefix = bits === undefined ? (family === 6 ? 128 : 32) : Number(bits)
    if (family === 0 || extra !== undefined || !Number.isInteger(prefix) || prefix < 0 || prefix > (family === 6 ? 128 : 32) || (bits !== undefined && !/^\d+$/.test(bits))) {
      throw new Error(`${JSON.stringify(entry)} is not an IP address or a CIDR like 10.0.0.0/8`)
    }
    list.addSubnet(address as string, prefix, family === 6 ? 'ipv6' : 'ipv4')
  }
  return (address) => {
    if (address === undefined || networks.length === 0) return false
    const plain = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1] ?? address
    const family = isIP(plain)
    return family !== 0 && list.check(plain, family === 6 ? 'ipv6' : 'ipv4')
  }
}

/** Files kept free for what a process needs besides its clients: the database pool, the session, Redis, requests in flight. */
export const FILES_RESERVED = 512

/** The process's open-files limit (soft) and how many it has open; undefined where /proc does not tell (not Linux). */
export function openFiles (): { limit: number, open: number } | undefined {
  try {
    const limit = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1]
    if (limit === undefined) return undefined
    return { limit: Number(limit), open: readdirSync('/proc/self/fd').length }
  } catch {
    return undefined
  }
}

/** Clients (WebSocket and SSE) to take: `max`, else the files free past FILES_RESERVED (a process out of files loses its database). */
export function connectionCapacity (max: number, files: { limit: number, open: number } | undefined): number {
  const fromFiles = files === undefined ? Number.POSITIVE_INFINITY : Math.max(0, files.limit - files.open - FILES_RESERVED)
  return max > 0 ? Math.min(max, fromFiles) : fromFiles
}
