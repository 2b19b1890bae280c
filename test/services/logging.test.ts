import t from 'tap'
import Fastify, { type FastifyBaseLogger } from 'fastify'
import { lazyChildLogger } from '../../services/http/logging.js'

/** A Fastify pino logger at `level` writing its lines into an array. */
function logger (level: string) {
  const lines: Array<Record<string, unknown>> = []
  const app = Fastify({ logger: { level, stream: { write: (line: string) => { lines.push(JSON.parse(line)) } } } })
  return { log: app.log, lines }
}

t.test('lazyChildLogger: nothing is made for what is not logged; what is logged carries the bindings and serializers', async (t) => {
  const { log, lines } = logger('warn')
  const calls: unknown[] = []
  const parent = Object.create(log, { child: { value: (...args: unknown[]) => { calls.push(args); return log.child(...(args as Parameters<FastifyBaseLogger['child']>)) } } }) as FastifyBaseLogger
  const child = lazyChildLogger(parent, { reqId: 'r1' }, { serializers: { user: (u: { name: string }) => u.name } })
  child.info({ user: { name: 'ana' } }, 'not at warn')
  child.debug('nor this')
  t.equal(calls.length, 0, 'no child made while nothing is logged')
  t.equal(child.level, 'warn')
  child.warn({ user: { name: 'ana' } }, 'logged')
  t.equal(calls.length, 1, 'made on the first line logged')
  child.error('again')
  t.equal(calls.length, 1, 'and once')
  child.child({ sub: 'x' }).fatal('grandchild')
  t.match(lines, [
    { level: 40, reqId: 'r1', user: 'ana', msg: 'logged' },
    { level: 50, reqId: 'r1', msg: 'again' },
    { level: 60, reqId: 'r1', sub: 'x', msg: 'grandchild' }
  ])
  // Once made, the child's own level rules.
  child.level = 'info'
  child.info('now on')
  t.match(lines.at(-1), { level: 30, reqId: 'r1', msg: 'now on' })
  t.equal((child as unknown as { isLevelEnabled: (l: string) => boolean }).isLevelEnabled('debug'), false)
})

t.test('lazyChildLogger: a route log level, or a logger that cannot tell its levels, gets its child at once', async (t) => {
  const { log, lines } = logger('warn')
  const leveled = lazyChildLogger(log, { reqId: 'r2' }, { level: 'info' })
  leveled.info('route level')
  t.match(lines, [{ level: 30, reqId: 'r2', msg: 'route level' }])
  const plain = { level: 'info', child: () => plain, info () {}, error () {}, debug () {}, fatal () {}, warn () {}, trace () {}, silent () {} } as unknown as FastifyBaseLogger
  t.equal(lazyChildLogger(plain, { reqId: 'r3' }, {}), plain, 'no isLevelEnabled: the logger\'s own child')
})
