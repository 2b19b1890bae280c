import type { PageEvents, Timers, WebSocketLike } from '../../client/index.js'

interface Timer { id: number, at: number, fn: () => void }

/** Timers that only move when the test says so. */
export class FakeClock implements Timers {
  private time = 1_700_000_000_000
  private timers: Timer[] = []
  private nextId = 1

  setTimeout = (fn: () => void, ms: number): unknown => {
    const timer = { id: this.nextId++, at: this.time + Math.max(0, ms), fn }
    this.timers.push(timer)
    return timer.id
  }

  clearTimeout = (handle: unknown): void => {
    this.timers = this.timers.filter(t => t.id !== handle)
  }

  now = (): number => this.time

  get pending (): number { return this.timers.length }

  /** Moves time forward by `ms`, running every timer that falls due, in order, with microtasks settled between. */
  async advance (ms: number): Promise<void> {
    const end = this.time + ms
    await flush()
    for (;;) {
      const due = this.timers.filter(t => t.at <= end).sort((a, b) => a.at - b.at || a.id - b.id)[0]
      if (due === undefined) break
      this.timers = this.timers.filter(t => t !== due)
      this.time = due.at
      due.fn()
      await flush()
    }
    this.time = end
  }
}

/** Lets pending promise callbacks run. */
export async function flush (): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise(resolve => setImmediate(resolve))
}

/** A WebSocket the test drives by hand; every instance is kept in FakeSocket.all. */
export class FakeSocket implements WebSocketLike {
  static all: FakeSocket[] = []
  static reset (): void { FakeSocket.all = [] }
  static get last (): FakeSocket {
    const s = FakeSocket.all.at(-1)
    if (s === undefined) throw new Error('no socket was opened')
    return s
  }

  readyState = 0
  onopen: ((event: any) => void) | null = null
  onmessage: ((event: any) => void) | null = null
  onerror: ((event: any) => void) | null = null
  onclose: ((event: any) => void) | null = null
  readonly sent: any[] = []
  closedWith: { code?: number, reason?: string } | null = null

  constructor (readonly url: string, readonly protocols?: string | string[]) {
    FakeSocket.all.push(this)
  }

  send (data: string): void { this.sent.push(JSON.parse(data)) }

  close (code?: number, reason?: string): void {
    this.closedWith = { code, reason }
    this.readyState = 3
  }

  accept (): void {
    this.readyState = 1
    this.onopen?.({})
  }

  /** A handshake that fails; `status` as the ws package reports it, or none (a browser). */
  refuse (status?: number): void {
    this.readyState = 3
    this.onerror?.({ message: status === undefined ? 'error' : `Unexpected server response: ${status}` })
    this.onclose?.({ code: 1006, reason: '' })
  }

  serverClose (code: number, reason = ''): void {
    this.readyState = 3
    this.onclose?.({ code, reason })
  }

  receive (message: unknown): void {
    this.onmessage?.({ data: JSON.stringify(message) })
  }

  sentOfType (type: string): any[] { return this.sent.filter(m => m.type === type) }
}

/** Page events fired by the test. */
export class FakePage implements PageEvents {
  online = new Set<() => void>()
  visible = new Set<() => void>()
  onOnline = (fn: () => void): (() => void) => { this.online.add(fn); return () => this.online.delete(fn) }
  onVisible = (fn: () => void): (() => void) => { this.visible.add(fn); return () => this.visible.delete(fn) }
  fireOnline (): void { for (const fn of this.online) fn() }
  fireVisible (): void { for (const fn of this.visible) fn() }
}

/** A JWT-shaped token with the given payload (the signature is not checked client-side). */
export function fakeToken (payload: Record<string, unknown>, tag = 'sig'): string {
  const b64 = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url')
  return `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(payload)}.${tag}`
}

/** Like the ws package's socket: has terminate() for connections that will never finish a close handshake. */
export class TerminableSocket extends FakeSocket {
  terminated = false
  terminate (): void {
    this.terminated = true
    this.readyState = 3
  }
}
