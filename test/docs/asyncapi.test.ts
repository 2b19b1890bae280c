import t from 'tap'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { DiagnosticSeverity, Parser } from '@asyncapi/parser'

const root = fileURLToPath(new URL('../../', import.meta.url))

/** The server's source (not the tests): where every message type it speaks is written. */
async function sources (): Promise<Map<string, string>> {
  const files = new Map<string, string>()
  for (const dir of ['.', 'services', 'routes', 'plugins']) {
    for (const name of await readdir(join(root, dir))) {
      if (name.endsWith('.ts') && !name.endsWith('.d.ts')) files.set(join(dir, name), await readFile(join(root, dir, name), 'utf8'))
    }
  }
  return files
}

/** `type:` values that are JSON Schema or OpenAPI keywords, not protocol messages. */
const SCHEMA_TYPES = new Set(['string', 'number', 'integer', 'boolean', 'object', 'array', 'null', 'http'])

/** 'a' | 'b' literals after `type: ` (object literals and parameter types alike). */
function typeLiterals (text: string): string[] {
  const found: string[] = []
  for (const m of text.matchAll(/\btype: ('[a-z_]+'(?:\s*\|\s*'[a-z_]+')*)/g)) {
    for (const lit of (m[1] as string).matchAll(/'([a-z_]+)'/g)) if (!SCHEMA_TYPES.has(lit[1] as string)) found.push(lit[1] as string)
  }
  return found
}

/** The literals of a `export type Name =` union, up to the first blank line. */
function unionBlock (text: string, name: string): string {
  const start = text.indexOf(`export type ${name} =`)
  if (start === -1) throw new Error(`export type ${name} not found`)
  const end = text.indexOf('\n\n', start)
  return text.slice(start, end === -1 ? undefined : end)
}

async function parseDocument () {
  const raw = await readFile(join(root, 'docs/asyncapi.yaml'), 'utf8')
  const { document, diagnostics } = await new Parser().parse(raw)
  return { raw, document, errors: diagnostics.filter(d => d.severity === DiagnosticSeverity.Error) }
}

/** The `type` const of each message of the operations with that action. */
function documentedTypes (document: NonNullable<Awaited<ReturnType<typeof parseDocument>>['document']>, action: 'send' | 'receive'): Set<string> {
  const types = new Set<string>()
  for (const op of document.operations().all()) {
    if (op.action() !== action) continue
    for (const msg of op.messages().all()) {
      const type = msg.payload()?.properties()?.type?.const()
      if (typeof type === 'string') types.add(type)
    }
  }
  return types
}

t.test('docs/asyncapi.yaml is a valid AsyncAPI 3 document', async (t) => {
  const { document, errors } = await parseDocument()
  t.same(errors.map(e => `line ${e.range.start.line + 1} ${e.path.join('.')}: ${e.message}`), [], 'no validation errors')
  t.ok(document, 'parsed')
  t.equal(document?.version(), '3.0.0')
})

t.test('every message type in the source is documented, in the right direction', async (t) => {
  const { document } = await parseDocument()
  if (document === undefined) return t.fail('document did not parse')
  const src = await sources()
  const protocol = src.get(join('services', 'protocol.ts')) as string
  const client = new Set(typeLiterals(unionBlock(protocol, 'ClientMessage')))
  t.ok(client.size >= 3, `client types found in ClientMessage: ${[...client].join(', ')}`)
  const server = new Set<string>()
  for (const text of src.values()) for (const type of typeLiterals(text)) if (!client.has(type)) server.add(type)
  t.ok(server.size >= 5, `server types found in the source: ${[...server].join(', ')}`)

  const receives = documentedTypes(document, 'receive')
  const sends = documentedTypes(document, 'send')
  for (const type of client) t.ok(receives.has(type), `client → server "${type}" is documented`)
  for (const type of server) t.ok(sends.has(type), `server → client "${type}" is documented`)
  // What the core protocol has today must stay documented even if the scan above changes shape.
  for (const type of ['subscribe', 'unsubscribe', 'ping']) t.ok(receives.has(type), `receives ${type}`)
  for (const type of ['subscribed', 'unsubscribed', 'pong', 'stats', 'error']) t.ok(sends.has(type), `sends ${type}`)
})

t.test('every error code the WebSocket can send and every close code are documented', async (t) => {
  const { document } = await parseDocument()
  if (document === undefined) return t.fail('document did not parse')
  const src = await sources()
  const errorMsg = document.components().messages().get('error')
  const documented = new Set(errorMsg?.payload()?.properties()?.data?.properties()?.code?.enum() as string[] | undefined ?? [])

  // unauthorized is HTTP only: the handshake answers 401 before any WebSocket exists.
  const codes = new Set([...unionBlock(src.get(join('services', 'errors.ts')) as string, 'ErrorCode').matchAll(/'([a-z_]+)'/g)]
    .map(m => m[1] as string).filter(c => c !== 'unauthorized'))
  for (const text of src.values()) for (const m of text.matchAll(/errorMessage\('([a-z_]+)'/g)) codes.add(m[1] as string)
  t.ok(codes.size >= 6, `error codes found: ${[...codes].join(', ')}`)
  for (const code of codes) t.ok(documented.has(code), `error code "${code}" is documented`)

  const description = document.info().description() ?? ''
  const closeCodes = new Set(['1008', '1009', '1012', '1013', '4001'])
  for (const text of src.values()) {
    for (const m of text.matchAll(/\bCLOSE_[A-Z_]+\s*=\s*(\d{4})\b/g)) closeCodes.add(m[1] as string)
    for (const m of text.matchAll(/\.close\((\d{4})\b/g)) closeCodes.add(m[1] as string)
  }
  for (const code of closeCodes) t.match(description, new RegExp(`\\| ${code} \\|`), `close code ${code} is in the table`)
})
