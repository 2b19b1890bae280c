import t from 'tap'
import { decodeToken, isExpired, negociosOf } from '../../client/index.js'
import { sign } from '../helper.js'

t.test('decodeToken reads a real JWT payload, and returns null for anything else', async (t) => {
  t.match(decodeToken(sign({ sub: 'u', negocios: ['ñandú-1'] })), { sub: 'u', negocios: ['ñandú-1'] }, 'UTF-8 payloads too')
  for (const bad of ['', 'abc', 'a.b', 'a..c', 'a.!!!.c', `x.${Buffer.from('[1]').toString('base64url')}.y`]) {
    t.equal(decodeToken(bad), null, JSON.stringify(bad))
  }
})

t.test('negociosOf merges negocio_id and negocios, without duplicates or non-strings', async (t) => {
  t.same(negociosOf({ negocio_id: 'a', negocios: ['b', 'a', 3] }), ['a', 'b'])
  t.same(negociosOf({ shop: 'x', shops: ['y'] }, { negocioId: 'shop', negocios: 'shops' }), ['x', 'y'])
  t.same(negociosOf({ role: 'admin' }), [])
})

t.test('isExpired looks at exp with a skew', async (t) => {
  t.equal(isExpired({ exp: 100 }, 101_000), true)
  t.equal(isExpired({ exp: 100 }, 101_000, 5_000), false)
  t.equal(isExpired({}, 101_000), false)
})
