import t from 'tap'
import { readFile } from 'node:fs/promises'
import {
  CLIENT_MESSAGE_TYPES, CLOSE, CLOSE_ACTIONS, ERROR_CODES, SERVER_MESSAGE_TYPES, TOKEN_CLOSE_CODES, type CloseAction, type CloseCode
} from '../../protocol.js'

// docs/protocol.md and docs/client.md against the protocol module (protocol.ts).

const protocolDoc = await readFile(new URL('../../docs/protocol.md', import.meta.url), 'utf8')
const clientDoc = await readFile(new URL('../../docs/client.md', import.meta.url), 'utf8')

/** The text of a `## title` section of docs/protocol.md, up to the next heading. */
function section (title: string): string {
  const start = protocolDoc.indexOf(`\n## ${title}\n`)
  if (start === -1) throw new Error(`docs/protocol.md has no section ${title}`)
  const end = protocolDoc.slice(start + 1).search(/\n#{2,3} /)
  return protocolDoc.slice(start, end === -1 ? undefined : start + 1 + end)
}

const sorted = (values: Iterable<string | number>): string[] => [...values].map(String).sort()

/** How the "Client should" column starts, for each action of the module. */
const ACTION_WORDS: Record<CloseAction, RegExp> = {
  backoff: /^reconnect with backoff\b/i,
  soon: /^reconnect soon\b/i,
  token: /^get a new token\b/i,
  stop: /^do not reconnect\b/i
}

t.test('the close-code table is the module\'s: every code, its reasons, what a client does; nothing else', async (t) => {
  const rows = [...section('Connection life').matchAll(/^\| (\d{4}) \|([^|]*)\|([^|]*)\|([^|]*)\|$/gm)]
  t.same(sorted(rows.map(r => r[1] as string)), sorted(Object.keys(CLOSE_ACTIONS)), 'one row per close code')
  for (const [, code, reasons, , todo] of rows) {
    const action = CLOSE_ACTIONS[Number(code) as CloseCode]
    if (action === undefined) continue
    t.match(todo?.trim(), ACTION_WORDS[action], `${code}: ${action}`)
    const expected = Object.values(CLOSE).filter(c => c.code === Number(code) && c.reason !== '').map(c => c.reason)
    t.same(sorted([...(reasons ?? '').matchAll(/`([^`]+)`/g)].map(m => m[1] as string)), sorted(expected), `${code}: its reasons`)
  }
})

t.test('the error-code table is the module\'s', async (t) => {
  const rows = [...section('Server → client').matchAll(/^\| `([a-z_]+)` \|/gm)].map(m => m[1] as string).filter(c => c !== 'code')
  t.same(sorted(rows), sorted(ERROR_CODES), 'one row per code (after the header row)')
})

t.test('every message type is shown, each in its direction', async (t) => {
  const shown = (text: string): Set<string> => new Set([...text.matchAll(/"type":\s*"([a-z_]+)"/g)].map(m => m[1] as string))
  const fromClient = [...section('Client → server').matchAll(/^\| `\{"type":"([a-z_]+)"/gm)].map(m => m[1] as string)
  t.same(sorted(fromClient), sorted(CLIENT_MESSAGE_TYPES), 'one client message per row')
  const fromServer = new Set([...shown(section('Client → server')), ...shown(section('Server → client'))])
  for (const type of SERVER_MESSAGE_TYPES) t.ok(fromServer.has(type), `server message ${type}`)
  for (const type of fromServer) t.ok((CLIENT_MESSAGE_TYPES as readonly string[]).includes(type) || (SERVER_MESSAGE_TYPES as readonly string[]).includes(type), `${type} is in the module`)
})

t.test('the SDK page states the SDK\'s token close codes as the module has them', async (t) => {
  t.match(clientDoc, new RegExp(`^\\| \`authCloseCodes\` \\| \`\\[${TOKEN_CLOSE_CODES.join(', ')}\\]\` \\|`, 'm'))
})
