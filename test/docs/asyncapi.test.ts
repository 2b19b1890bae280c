import t, { type Test } from 'tap'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { DiagnosticSeverity, Parser } from '@asyncapi/parser'
import {
  CHANNEL_PREFIX, CLIENT_MESSAGE_TYPES, CLOSE, CLOSE_ACTIONS, ERROR_CODES, NEGOCIO_ID_PATTERN, SERVER_MESSAGE_TYPES, SSE_EVENT_TYPES,
  type CloseAction, type ErrorData, type Stats
} from '../../protocol.js'

// docs/asyncapi.yaml against the protocol module (protocol.ts): every message type, error code and
// close code of the module is documented, and nothing else is.

const root = fileURLToPath(new URL('../../', import.meta.url))

async function parseDocument () {
  const raw = await readFile(join(root, 'docs/asyncapi.yaml'), 'utf8')
  const { document, diagnostics } = await new Parser().parse(raw)
  return { raw, document, errors: diagnostics.filter(d => d.severity === DiagnosticSeverity.Error) }
}
type Document = NonNullable<Awaited<ReturnType<typeof parseDocument>>['document']>

async function documentOrFail (t: Test): Promise<Document | undefined> {
  const { document } = await parseDocument()
  if (document === undefined) t.fail('document did not parse')
  return document
}

/** The `type` const of each message of the operations with that action. */
function documentedTypes (document: Document, action: 'send' | 'receive'): string[] {
  const types: string[] = []
  for (const op of document.operations().all()) {
    if (op.action() !== action) continue
    for (const msg of op.messages().all()) {
      const type = msg.payload()?.properties()?.type?.const()
      if (typeof type === 'string') types.push(type)
    }
  }
  return types.sort()
}

const sorted = (values: Iterable<string | number>): string[] => [...values].map(String).sort()

/** The server's source (not the tests, not the client). */
async function serverSources (): Promise<Map<string, string>> {
  const files = new Map<string, string>()
  for (const dir of ['.', 'services', 'routes', 'plugins']) {
    for (const name of await readdir(join(root, dir))) {
      if (name.endsWith('.ts') && !name.endsWith('.d.ts')) files.set(join(dir, name), await readFile(join(root, dir, name), 'utf8'))
    }
  }
  return files
}

/** How the third column of a close-code row starts, for each action of the module. */
const ACTION_WORDS: Record<CloseAction, RegExp> = {
  backoff: /^Reconnect with backoff\b/,
  soon: /^Reconnect soon\b/,
  token: /^Get a new token\b/,
  stop: /^Do not reconnect\b/
}

t.test('docs/asyncapi.yaml is a valid AsyncAPI 3 document', async (t) => {
  const { document, errors } = await parseDocument()
  t.same(errors.map(e => `line ${e.range.start.line + 1} ${e.path.join('.')}: ${e.message}`), [], 'no validation errors')
  t.ok(document, 'parsed')
  t.equal(document?.version(), '3.0.0')
})

t.test('the message types are the module\'s, each in its direction, and no other', async (t) => {
  const document = await documentOrFail(t)
  if (document === undefined) return
  t.same(documentedTypes(document, 'receive'), sorted(CLIENT_MESSAGE_TYPES), 'client → server')
  t.same(documentedTypes(document, 'send'), sorted(SERVER_MESSAGE_TYPES), 'server → client')
  t.same(sorted(document.components().messages().all().map(m => m.id())),
    sorted([...CLIENT_MESSAGE_TYPES, ...SERVER_MESSAGE_TYPES, ...SSE_EVENT_TYPES.map(e => `sse_${e}`)]),
    'no message component beyond them')
})

t.test('the SSE events are the module\'s, each named as on the wire', async (t) => {
  const document = await documentOrFail(t)
  if (document === undefined) return
  const channel = document.channels().all().find(c => c.address() === '/sse')
  t.ok(channel, 'a channel at /sse')
  t.same(sorted(channel?.messages().all().map(m => m.name() ?? '') ?? []), sorted(SSE_EVENT_TYPES), 'one message per event, named as the event')
  const stats = document.components().messages().get('sse_stats')
  t.same(sorted(stats?.payload()?.required() ?? []), sorted(['negocio_id', 'citas_hoy', 'total_citas', 'citas_completadas', 'citas_canceladas', 'timestamp']),
    'the stats event carries the Stats object itself')
})

t.test('the error codes are the module\'s, in the enum and in the table, and no other', async (t) => {
  const document = await documentOrFail(t)
  if (document === undefined) return
  const error = document.components().messages().get('error')
  const data = error?.payload()?.properties()?.data
  t.same(sorted(data?.properties()?.code?.enum() as string[] | undefined ?? []), sorted(ERROR_CODES), 'data.code enum')
  const rows = [...(error?.description() ?? '').matchAll(/^\| `([a-z_]+)` \|/gm)].map(m => m[1] as string)
  t.same(sorted(rows), sorted(ERROR_CODES), 'one table row per code')
  // Completeness is checked by the type: a field added to ErrorData must be listed here.
  const fields: Record<keyof ErrorData, boolean> = { code: true, message: true, channel: false }
  t.same(sorted(Object.keys(data?.properties() ?? {})), sorted(Object.keys(fields)), 'data has the module\'s fields')
  t.same(sorted(data?.required() ?? []), sorted(Object.keys(fields).filter(k => fields[k as keyof ErrorData])), 'and requires the same ones')
})

t.test('the close codes are the module\'s, with what a client does after each, and no other', async (t) => {
  const document = await documentOrFail(t)
  if (document === undefined) return
  const description = document.info().description() ?? ''
  const rows = [...description.matchAll(/^\| (\d{4}) \| ([^|]+) \| ([^|]+) \|$/gm)]
  t.same(sorted(rows.map(r => r[1] as string)), sorted(Object.keys(CLOSE_ACTIONS)), 'one table row per close code')
  for (const [, code, , todo] of rows) {
    const action = CLOSE_ACTIONS[Number(code) as keyof typeof CLOSE_ACTIONS]
    if (action === undefined) continue
    t.match(todo?.trim(), ACTION_WORDS[action], `${code}: ${action}`)
  }
  for (const { code, reason } of Object.values(CLOSE)) {
    if (reason !== '') t.match(description, new RegExp(`\\| ${code} \\|[^\\n]*"${reason}"`), `${code} names its reason "${reason}"`)
  }
})

t.test('the channel and the Stats shape are the module\'s', async (t) => {
  const document = await documentOrFail(t)
  if (document === undefined) return
  const schemas = document.components().schemas()
  t.equal(schemas.get('Channel')?.pattern(), `^${CHANNEL_PREFIX}${NEGOCIO_ID_PATTERN.slice(1)}`)
  // A field added to Stats fails to compile here until it is listed (and documented).
  const fields: Record<keyof Stats, 'string' | 'integer'> = {
    negocio_id: 'string',
    citas_hoy: 'integer',
    total_citas: 'integer',
    citas_completadas: 'integer',
    citas_canceladas: 'integer',
    timestamp: 'integer'
  }
  const stats = schemas.get('Stats')
  t.same(sorted(stats?.required() ?? []), sorted(Object.keys(fields)), 'every field required')
  const properties = stats?.properties() ?? {}
  t.same(sorted(Object.keys(properties)), sorted(Object.keys(fields)), 'no other field')
  for (const [name, type] of Object.entries(fields)) t.equal(properties[name]?.type(), type, `${name} is ${type}`)
})

t.test('the server speaks only what the module defines', async (t) => {
  const known = new Set<string>([...CLIENT_MESSAGE_TYPES, ...SERVER_MESSAGE_TYPES])
  // `type:` values that are JSON Schema or OpenAPI keywords, not protocol messages.
  const schemaTypes = new Set(['string', 'number', 'integer', 'boolean', 'object', 'array', 'null', 'http', 'apiKey'])
  const closeCodes = new Set<number>(Object.values(CLOSE).map(c => c.code))
  for (const [file, text] of await serverSources()) {
    if (file === 'protocol.ts') continue
    for (const m of text.matchAll(/\btype: ('[A-Za-z_]+'(?:\s*\|\s*'[A-Za-z_]+')*)/g)) {
      for (const lit of (m[1] as string).matchAll(/'([A-Za-z_]+)'/g)) {
        const type = lit[1] as string
        if (!schemaTypes.has(type)) t.ok(known.has(type), `${file}: message type "${type}" is in the module`)
      }
    }
    for (const m of text.matchAll(/errorMessage\('([a-z_]+)'/g)) t.ok((ERROR_CODES as readonly string[]).includes(m[1] as string), `${file}: error code ${m[1]}`)
    // Close codes come from the module: no number written at a close, no close-code constant of its own.
    t.same([...text.matchAll(/\.close(?:All)?\(\s*\d+/g)].map(m => m[0]), [], `${file}: no literal close code`)
    t.same([...text.matchAll(/\bconst CLOSE_[A-Z_]+\s*=/g)].map(m => m[0]), [], `${file}: no close-code constant`)
    for (const m of text.matchAll(/\bclosed? with (\d{4})\b/g)) t.ok(closeCodes.has(Number(m[1])), `${file}: ${m[1]} named in a comment is a module close code`)
  }
})
