import t from 'tap'
import { spawn } from 'node:child_process'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { demoFolder, projectRoot, startDemo } from '../fixtures/demo.js'
import { waitFor } from '../helper.js'

// Every ```sh / ```bash / ```shell block of README.md and docs/*.md runs against the demo, started
// once the way `npm start` starts it (from the sources, an embedded PostgreSQL in a temporary
// folder, any free port), so an example cannot drift from what the server does.
//
// - A block runs with `bash -e` in the repository, with only these variables set (the docs tell
//   readers to export them from the demo's banner): CITAS_LIVE, TOKEN, SERVICE_TOKEN, METRICS_TOKEN.
// - A line `# -> <text>` shows output: each one must appear in what the block printed, in order;
//   `...` in it stands for any text on that line.
// - Setup lines (npm install, npm ci, npm start, npm test, npm run <script>, with or without
//   variables before them) are not run here; the script they name must exist in package.json.

/** The variables the docs' shell examples may use without setting them. */
export const PROVIDED = ['CITAS_LIVE', 'TOKEN', 'SERVICE_TOKEN', 'METRICS_TOKEN'] as const

export interface ShellBlock {
  file: string
  /** Line of the opening fence, 1-based. */
  line: number
  code: string
}

/** The shell blocks of a markdown text. */
export function shellBlocks (file: string, text: string): ShellBlock[] {
  const blocks: ShellBlock[] = []
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,})(\S*)/.exec(lines[i] as string)
    if (open === null) continue
    const fence = open[2] as string
    const body: string[] = []
    let j = i + 1
    while (j < lines.length && !(lines[j] as string).trim().startsWith(fence)) body.push(lines[j++] as string)
    if (['sh', 'bash', 'shell'].includes(open[3] as string)) blocks.push({ file, line: i + 1, code: body.join('\n') })
    i = j
  }
  return blocks
}

/** A line with its backslash continuations joined, and where it starts in the block (0-based). */
export function logicalLines (code: string): Array<{ text: string, at: number }> {
  const out: Array<{ text: string, at: number }> = []
  let current: { text: string, at: number } | undefined
  code.split('\n').forEach((line, at) => {
    if (current === undefined) current = { text: line, at }
    else current.text += '\n' + line
    if (!/\\$/.test(line)) {
      out.push(current)
      current = undefined
    }
  })
  if (current !== undefined) out.push(current)
  return out
}

/**
 * The npm command of a setup line (`npm start`, `PORT=0 npm run build`, `npm test -- a.test.ts`):
 * the script it runs ('' for install and ci), or undefined when the line is not one.
 */
export function setupScript (line: string): string | undefined {
  const m = /^\s*(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*npm\s+(\S+)(?:\s+(\S+))?/.exec(line)
  if (m === null) return undefined
  const [, command, arg] = m as unknown as [string, string, string | undefined]
  if (command === 'install' || command === 'i' || command === 'ci') return ''
  if (command === 'run' || command === 'run-script') return arg ?? '<missing>'
  return command // start, test, or a command the check will not find among the scripts
}

/** The outputs a block shows, in order. */
export function expectedOutputs (code: string): string[] {
  return [...code.matchAll(/^\s*# -> (.*)$/gm)].map(m => (m[1] as string).trimEnd())
}

/** Whether `output` shows each expected text in order (`...`: any text on the line). */
export function matchesInOrder (output: string, expected: readonly string[]): { ok: true } | { ok: false, missing: string } {
  let from = 0
  for (const text of expected) {
    const pattern = new RegExp(text.split('...').map(s => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('[^\\n]*?'))
    const found = pattern.exec(output.slice(from))
    if (found === null) return { ok: false, missing: text }
    from += found.index + found[0].length
  }
  return { ok: true }
}

/** Upper-case variables a block reads without setting them itself. */
export function unsetVariables (code: string): string[] {
  const assigned = new Set([...code.matchAll(/(?:^|\s|export\s+)([A-Z][A-Z0-9_]*)=/gm)].map(m => m[1] as string))
  const read = new Set([...code.matchAll(/\$\{?([A-Z][A-Z0-9_]*)/g)].map(m => m[1] as string))
  return [...read].filter(v => !assigned.has(v) && !(PROVIDED as readonly string[]).includes(v))
}

t.test('reading the blocks', async (t) => {
  const md = ['# x', '```sh', 'npm install', 'curl -s a \\', '  -H b', '# -> {"a":...}', '```', '```text', 'docker run', '```', '```bash', 'echo $TOKEN $OTHER', '```'].join('\n')
  const blocks = shellBlocks('x.md', md)
  t.same(blocks.map(b => b.line), [2, 11])
  t.same(logicalLines(blocks[0]?.code ?? '').map(l => l.text), ['npm install', 'curl -s a \\\n  -H b', '# -> {"a":...}'])
  t.same(expectedOutputs(blocks[0]?.code ?? ''), ['{"a":...}'])
  t.same(unsetVariables(blocks[1]?.code ?? ''), ['OTHER'])
  t.same(unsetVariables('export X=1\necho "$X" "$' + '{CITAS_LIVE}"'), [])
  t.equal(setupScript('npm start'), 'start')
  t.equal(setupScript('npm ci'), '')
  t.equal(setupScript('BENCH_SCALE=0.1 npm run bench  # quick'), 'bench')
  t.equal(setupScript('npm test -- test/a.test.ts'), 'test')
  t.equal(setupScript('npx tap'), undefined)
  t.equal(setupScript('curl -s x'), undefined)
  t.same(matchesInOrder('{"a":1,"b":2}{"c":3}\nnext', ['{"a":...}', '{"c":3}', 'next']), { ok: true })
  t.same(matchesInOrder('{"c":3}{"a":1}', ['{"a":...}', '{"c":3}']), { ok: false, missing: '{"c":3}' })
})

const manifest = JSON.parse(await readFile(join(projectRoot, 'package.json'), 'utf8')) as { scripts: Record<string, string> }
const files = ['README.md', ...(await readdir(join(projectRoot, 'docs'))).filter(f => f.endsWith('.md')).sort().map(f => `docs/${f}`)]
const blocks: ShellBlock[] = []
for (const file of files) blocks.push(...shellBlocks(file, await readFile(join(projectRoot, file), 'utf8')))

t.test('every setup line names a script package.json has, and every variable is one the docs provide', async (t) => {
  t.ok(blocks.length >= 10, `${blocks.length} shell blocks in README.md and docs/`)
  for (const block of blocks) {
    const where = `${block.file}:${block.line}`
    for (const { text, at } of logicalLines(block.code)) {
      const script = setupScript(text)
      if (script === undefined || script === '') continue
      t.ok(Object.hasOwn(manifest.scripts, script), `${where}+${at + 1}: npm script "${script}" exists`)
    }
    t.same(unsetVariables(block.code), [], `${where}: reads only ${PROVIDED.join(', ')} or what it sets itself`)
  }
})

/** Runs a block with bash -e, setup lines left out (kept as `:` so line numbers in errors hold). */
async function run (block: ShellBlock, env: Record<string, string>): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const script = logicalLines(block.code)
    .map(({ text }) => setupScript(text) === undefined ? text : text.split('\n').map(() => ':').join('\n'))
    .join('\n')
  const child = spawn('bash', ['-e', '-c', script], {
    cwd: projectRoot,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', LANG: 'C.UTF-8', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
  const code = await new Promise<number | null>(resolve => child.on('close', resolve))
  clearTimeout(timer)
  return { code, stdout, stderr }
}

t.test('every shell example runs against the demo and shows what it prints', async (t) => {
  const folder = await demoFolder(t)
  const metricsToken = 'docs-metrics-token-0123456789'
  // No demo activity: the figures hold still while the examples run, as nothing else writes.
  const demo = await startDemo(folder, { DEMO_ACTIVITY: 'off', METRICS_TOKEN: metricsToken })
  const base = `http://127.0.0.1:${demo.port}`
  // As a reader would after reading the banner: wait until the demo leads change capture.
  await waitFor(async () => {
    const res = await fetch(`${base}/ready`).catch(() => undefined)
    const body = await res?.json().catch(() => undefined) as { status?: string, change_capture?: { role?: string } } | undefined
    return body?.status === 'ready' && body.change_capture?.role === 'leader'
  }, 30_000)
  const env = { CITAS_LIVE: base, TOKEN: demo.userToken, SERVICE_TOKEN: demo.serviceToken, METRICS_TOKEN: metricsToken }
  t.ok(demo.userToken !== '' && demo.serviceToken !== '', 'the banner printed both tokens')

  // The README's sample of the banner: the same lines, in the same order, as the demo prints.
  const readme = await readFile(join(projectRoot, 'README.md'), 'utf8')
  const labels = (text: string): string[] => [...text.matchAll(/^ {2}([A-Za-z][A-Za-z ]*):/gm)].map(m => m[1] as string)
  const sample = /```text\n(citas-live demo is running[\s\S]*?)```/.exec(readme)?.[1] ?? ''
  const printed = demo.p.output().slice(demo.p.output().indexOf('citas-live demo is running'))
  t.ok(labels(sample).includes('SSE') && labels(sample).includes('psql'), 'the README has a sample of the banner')
  t.same(labels(sample), labels(printed.slice(0, printed.indexOf('  psql:') + 7)), 'the README shows the banner\'s lines')

  for (const block of blocks) {
    const where = `${block.file}:${block.line}`
    const { code, stdout, stderr } = await run(block, env)
    t.equal(code, 0, `${where}: exits 0`, { stdout, stderr })
    const shown = matchesInOrder(stdout, expectedOutputs(block.code))
    t.ok(shown.ok, `${where}: prints what it shows`, shown.ok ? {} : { missing: shown.missing, stdout, stderr })
  }
})
