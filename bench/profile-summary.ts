/**
 * Summaries of the profiles `npm run bench` writes with BENCH_CPU_PROF=<dir> or
 * BENCH_HEAP_SNAPSHOT=<dir>:
 *   node dist-bench/bench/profile-summary.js <file.cpuprofile> [rows]
 *   node dist-bench/bench/profile-summary.js <file.heapsnapshot> <connections> [rows]
 * A CPU profile prints self time per function; a heap snapshot prints self size per kind of
 * object, in total and per connection.
 */
import { readFileSync } from 'node:fs'

interface CpuProfile {
  nodes: Array<{ id: number, callFrame: { functionName: string, url: string, lineNumber: number } }>
  samples: number[]
  timeDeltas: number[]
}

interface HeapSnapshot {
  snapshot: { meta: { node_fields: string[], node_types: [string[], ...unknown[]] } }
  nodes: number[]
  strings: string[]
}

function top (totals: Map<string, [number, number]>, rows: number): Array<[string, [number, number]]> {
  return [...totals.entries()].sort((a, b) => b[1][1] - a[1][1]).slice(0, rows)
}

function cpu (file: string, rows: number): void {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile
  const selfUs = new Map<number, number>()
  p.samples.forEach((id, i) => selfUs.set(id, (selfUs.get(id) ?? 0) + (p.timeDeltas[i] ?? 0)))
  const totals = new Map<string, [number, number]>()
  let all = 0
  for (const n of p.nodes) {
    const t = selfUs.get(n.id) ?? 0
    all += t
    const f = n.callFrame
    const key = `${f.functionName === '' ? '(anonymous)' : f.functionName} ${f.url.split('/').slice(-2).join('/')}:${f.lineNumber + 1}`
    const row = totals.get(key) ?? [0, 0]
    row[1] += t
    totals.set(key, row)
  }
  for (const [key, [, t]] of top(totals, rows)) {
    process.stdout.write(`${(t / 1000).toFixed(0).padStart(8)} ms ${(100 * t / all).toFixed(1).padStart(5)} %  ${key}\n`)
  }
  process.stdout.write(`${(all / 1000).toFixed(0).padStart(8)} ms total\n`)
}

function heap (file: string, connections: number, rows: number): void {
  const s = JSON.parse(readFileSync(file, 'utf8')) as HeapSnapshot
  const fields = s.snapshot.meta.node_fields
  const width = fields.length
  const typeAt = fields.indexOf('type')
  const nameAt = fields.indexOf('name')
  const sizeAt = fields.indexOf('self_size')
  const types = s.snapshot.meta.node_types[0]
  const totals = new Map<string, [number, number]>()
  let all = 0
  for (let i = 0; i < s.nodes.length; i += width) {
    const type = types[s.nodes[i + typeAt] as number] ?? '?'
    const name = /string|code|number/.test(type) ? '' : (s.strings[s.nodes[i + nameAt] as number] ?? '').slice(0, 60)
    const size = s.nodes[i + sizeAt] as number
    const row = totals.get(`${type} ${name}`) ?? [0, 0]
    row[0]++
    row[1] += size
    totals.set(`${type} ${name}`, row)
    all += size
  }
  process.stdout.write('   count      bytes  per conn  kind\n')
  for (const [key, [count, bytes]] of top(totals, rows)) {
    process.stdout.write(`${String(count).padStart(8)} ${String(bytes).padStart(10)} ${(bytes / connections).toFixed(0).padStart(9)}  ${key}\n`)
  }
  process.stdout.write(`${(all / 2 ** 20).toFixed(1)} MiB heap, ${(all / connections).toFixed(0)} bytes per connection\n`)
}

const [file, a, b] = process.argv.slice(2)
if (file === undefined) throw new Error('usage: profile-summary <file.cpuprofile [rows] | file.heapsnapshot connections [rows]>')
if (file.endsWith('.heapsnapshot')) heap(file, Number(a ?? 1), Number(b ?? 30))
else cpu(file, Number(a ?? 30))
