import t from 'tap'
import { existsSync } from 'node:fs'
import { readdir, readFile } from 'node:fs/promises'
import { dirname, join, normalize } from 'node:path'
import { fileURLToPath } from 'node:url'

// Every relative link of the markdown pages goes to a file that exists and, with a #fragment, to a
// heading of that file: moving a section or a page cannot leave a dead link behind.

const root = fileURLToPath(new URL('../../', import.meta.url))
const pages = ['README.md', 'SECURITY.md', 'BENCHMARKS.md', ...(await readdir(join(root, 'docs'))).filter(f => f.endsWith('.md')).map(f => `docs/${f}`)]

/** GitHub's anchor of a heading: lower case, punctuation dropped, each space a hyphen. */
export function anchor (heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-')
}

/** The anchors of a page's headings (outside code blocks), with -1, -2 for repeats. */
function anchors (text: string): Set<string> {
  const found = new Set<string>()
  let inCode = false
  for (const line of text.split('\n')) {
    if (/^\s*```/.test(line)) inCode = !inCode
    const heading = inCode ? null : /^#{1,6} (.*)$/.exec(line)
    if (heading === null) continue
    const base = anchor(heading[1] as string)
    let name = base
    for (let n = 1; found.has(name); n++) name = `${base}-${n}`
    found.add(name)
  }
  return found
}

/** Relative links `[text](target)` outside code blocks and inline code. */
function links (text: string): string[] {
  const prose = text.replace(/```[\s\S]*?```/g, '').replace(/`[^`\n]*`/g, '')
  return [...prose.matchAll(/\]\(([^)\s]+)\)/g)].map(m => m[1] as string).filter(l => !/^[a-z]+:/.test(l))
}

t.test('headings become the anchors GitHub makes', async (t) => {
  t.equal(anchor('Client → server'), 'client--server')
  t.equal(anchor('Client SDK (`citas-live/client`)'), 'client-sdk-citas-liveclient')
  t.equal(anchor('Several instances: the bus and change capture'), 'several-instances-the-bus-and-change-capture')
})

t.test('every relative link of the docs resolves', async (t) => {
  const texts = new Map<string, string>()
  for (const page of pages) texts.set(page, await readFile(join(root, page), 'utf8'))
  for (const [page, text] of texts) {
    for (const link of links(text)) {
      const [path, fragment] = link.split('#', 2) as [string, string | undefined]
      const target = path === '' ? page : normalize(join(dirname(page), path))
      if (!existsSync(join(root, target))) {
        t.fail(`${page}: ${link} (no file ${target})`)
        continue
      }
      if (fragment === undefined || !target.endsWith('.md')) continue
      const targetText = texts.get(target) ?? await readFile(join(root, target), 'utf8')
      t.ok(anchors(targetText).has(fragment), `${page}: ${link}`)
    }
  }
})
