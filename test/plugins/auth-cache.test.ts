import { test } from 'tap'
import Fastify from 'fastify'
import { createSigner } from 'fast-jwt'
import authPlugin, { cachedVerifier, createSetInterner } from '../../plugins/auth.js'
import { citasOf } from '../../plugins/namespace.js'
import { isAppError } from '../../services/http/errors.js'
import { waitFor } from '../helper.js'

const SECRET = 'auth-cache-test-secret-0123456789'

async function auth () {
  const fastify = Fastify()
  await fastify.register(authPlugin, { secret: SECRET })
  await fastify.ready()
  return { fastify, auth: citasOf(fastify).auth }
}

const reason = (fn: () => unknown): string => {
  try {
    fn()
  } catch (err) {
    return isAppError(err) ? err.message : 'not an AppError'
  }
  return 'accepted'
}

test('a remembered token is checked against the clock again: once expired, it is refused', async (t) => {
  const { fastify, auth: a } = await auth()
  t.teardown(() => fastify.close())
  const expSeconds = Math.floor(Date.now() / 1000) + 1
  const token = createSigner({ key: SECRET, algorithm: 'HS256' })({ sub: 'u1', negocios: ['n1'], exp: expSeconds })
  t.equal(a.verify(token).sub, 'u1')
  t.equal(a.verify(token).sub, 'u1', 'the second check is answered from the cache')
  // Accepted until exp (from the cache), refused from then on: wait for the refusal, then check it came after exp.
  await waitFor(() => reason(() => a.verify(token)) !== 'accepted', 5000)
  t.ok(Date.now() >= expSeconds * 1000, 'not before exp')
  t.equal(reason(() => a.verify(token)), 'token expired')
})

test('cachedVerifier: hits only for the same string, within nbf..exp, never a refusal nor a long token', async (t) => {
  let clock = 1_000_000
  const calls: string[] = []
  const inner = (token: string): unknown => {
    calls.push(token)
    if (token.startsWith('bad')) throw new Error('refused')
    return JSON.parse(token) as unknown
  }
  const verify = cachedVerifier(inner, 2, () => clock)
  const tok = JSON.stringify({ sub: 'a', nbf: 1001, exp: 1005 })
  clock = 1_001_000
  t.same(verify(tok), { sub: 'a', nbf: 1001, exp: 1005 })
  t.same(verify(tok), { sub: 'a', nbf: 1001, exp: 1005 })
  t.equal(calls.length, 1, 'the second check is a hit')
  clock = 1_005_001
  t.same(verify(tok), { sub: 'a', nbf: 1001, exp: 1005 }, 'the inner verifier decides again past exp')
  t.equal(calls.length, 2)
  t.throws(() => verify('bad'))
  t.throws(() => verify('bad'))
  t.equal(calls.length, 4, 'a refusal is not remembered')
  const long = JSON.stringify({ sub: 'x'.repeat(2000) })
  verify(long)
  verify(long)
  t.equal(calls.length, 6, 'a token over 1 KiB is not remembered')
})

test('cachedVerifier: at most `size` tokens, each for at least size/2 newer ones, and a token in use stays', async (t) => {
  const calls: string[] = []
  const verify = cachedVerifier((token) => { calls.push(token); return { sub: token } }, 4, () => 1_000_000)
  const token = (i: number) => `t${i}`
  const missesOf = (tokens: string[]) => {
    const before = calls.length
    for (const tok of tokens) verify(tok)
    return calls.length - before
  }
  t.equal(missesOf([0, 1, 2, 3, 4, 5].map(token)), 6, 'new tokens are misses')
  t.equal(missesOf([token(5), token(4)]), 0, 'the last size/2 are remembered')
  t.equal(missesOf([token(0), token(1)]), 2, 'none older than `size` new tokens is')
  // The service token, checked between new tokens, is never dropped however many come.
  const service = 'service'
  verify(service)
  let serviceMisses = 0
  for (let i = 100; i < 140; i++) {
    verify(token(i))
    const before = calls.length
    verify(service)
    serviceMisses += calls.length - before
  }
  t.equal(serviceMisses, 0, 'a token in use stays remembered')
  t.equal(missesOf([token(100)]), 1, 'while the new tokens it outlived are dropped')
})

test('a token signed with another secret is refused every time, not remembered as valid', async (t) => {
  const { fastify, auth: a } = await auth()
  t.teardown(() => fastify.close())
  const forged = createSigner({ key: 'another-secret-0123456789abcdef', algorithm: 'HS256' })({ sub: 'u2' })
  t.equal(reason(() => a.verify(forged)), 'invalid token signature')
  t.equal(reason(() => a.verify(forged)), 'invalid token signature')
  const good = createSigner({ key: SECRET, algorithm: 'HS256' })({ sub: 'u1' })
  t.equal(a.verify(good).sub, 'u1')
  // The forged claims with the good token's signature: another string, verified again.
  const [h, p] = forged.split('.')
  const sig = good.split('.')[2] as string
  t.equal(reason(() => a.verify(`${h as string}.${p as string}.${sig}`)), 'invalid token signature')
})

test('tokens granting the same negocios share one set; other grants do not', async (t) => {
  const { fastify, auth: a } = await auth()
  t.teardown(() => fastify.close())
  const sign = createSigner({ key: SECRET })
  const of = (claims: Record<string, unknown>) => a.accessOf(a.verify(sign(claims)))
  const ana = of({ sub: 'ana', negocio_id: 'n1' })
  const luis = of({ sub: 'luis', negocios: ['n1'] })
  t.equal(ana.negocios, luis.negocios, 'one set for both')
  t.same([...ana.negocios], ['n1'])
  t.equal(ana.sub, 'ana')
  t.equal(luis.sub, 'luis')
  const both = of({ sub: 'eva', negocio_id: 'n2', negocios: ['n1', 'n2', 'bad id'] })
  t.same([...both.negocios], ['n2', 'n1'], 'repeats and ill-typed ids dropped')
  t.equal(of({ negocios: ['n1', 'n2'] }).negocios, both.negocios, 'order does not matter')
  t.not(both.negocios, ana.negocios)
  t.equal(of({}).negocios.size, 0)
})

test('the set interner is bounded: the oldest set stops being shared, none is lost', async (t) => {
  const intern = createSetInterner(2)
  const a = intern(['a'])
  intern(['b'])
  t.equal(intern(['a']), a, 'still shared')
  intern(['c'])
  const again = intern(['a'])
  t.not(again, a, 'dropped after 2 newer ones, made anew')
  t.same([...again], ['a'])
  t.same([...a], ['a'], 'the old set is untouched for whoever holds it')
})
