import t from 'tap'
import { redactTokens, redactUrl, scrubbingStream } from '../../services/http/redact.js'
import { JWT_SHAPE, sign } from '../helper.js'

const jwt = sign({ sub: 'u1', negocio_id: 'n1' })

t.test('redactUrl cuts the token parameter however it is spelled, and any JWT', async (t) => {
  const cases: Array<[string, string]> = [
    [`/ws?token=${jwt}`, '/ws?token=[REDACTED]'],
    [`/ws/?token=${jwt}&x=1`, '/ws/?token=[REDACTED]&x=1'],
    [`/ws?x=1&TOKEN=${jwt}`, '/ws?x=1&TOKEN=[REDACTED]'],
    [`/ws?%74oken=${jwt}`, '/ws?%74oken=[REDACTED]'],
    [`/ws?%54%4F%4B%45%4E=${jwt}`, '/ws?%54%4F%4B%45%4E=[REDACTED]'],
    ['/ws?token=not-a-jwt-but-secret', '/ws?token=[REDACTED]'],
    [`/ws?+token=${jwt}#frag`, '/ws?+token=[REDACTED]#frag'],
    [`/ws/${jwt}`, '/ws/[REDACTED]'],
    [`/ws?other=${jwt}`, '/ws?other=[REDACTED]'],
    ['/ws?%E0%A4%A=1&tokens=2', '/ws?%E0%A4%A=1&tokens=2'],
    ['/health', '/health']
  ]
  for (const [url, want] of cases) t.equal(redactUrl(url), want, url.slice(0, 40))
})

t.test('redactTokens and the scrubbing stream leave no JWT in a line', async (t) => {
  t.equal(redactTokens(`Route GET:/ws/?token=${jwt} not found`), 'Route GET:/ws/?token=[REDACTED] not found')
  t.equal(redactTokens('no token here'), 'no token here')
  const lines: string[] = []
  const stream = scrubbingStream({ write: (line: string) => lines.push(line) })
  stream.write(JSON.stringify({ msg: `bad token ${jwt}`, err: { message: jwt, stack: `Error: ${jwt}\n at x` } }) + '\n')
  t.equal(lines.length, 1)
  t.notMatch(lines[0] ?? '', JWT_SHAPE)
  t.same(JSON.parse(lines[0] ?? '{}').err.message, '[REDACTED]', 'the line stays valid JSON')
})
