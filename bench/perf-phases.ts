/**
 * Where a server's CPU went, from a `perf record` of it (BENCH_PERF=<dir>), kernel and runtime
 * included, at the sampler's low cost:
 *   perf script -i <dir>/<scenario>-<server>.perf.data > <file>.txt
 *   node dist-bench/bench/perf-phases.js <file>.txt <count>
 * Every sample (one per ~1 ms of CPU) goes to the first phase its stack shows (garbage collection,
 * a WebSocket upgrade, an incoming WebSocket message, an accept, a close), and within the phase to
 * the innermost frame of a known group (the token check, ws, Fastify, the server's own code, Node's
 * JavaScript); samples with no such frame are "runtime" (V8 and libuv in C++, the event loop).
 * Figures are µs per `count` (connects, deliveries...), with the kernel's part of each phase.
 * `perf script` must run while the /tmp/perf-<pid>.map files the servers wrote are still there.
 */
import { readFileSync } from 'node:fs'

const PHASES: Array<[string, RegExp]> = [
  ['garbage collection', /Scaveng|MarkCompact|ConcurrentMarking|MinorMark|Heap::|GCTracer|Sweeper/],
  ['upgrade (HTTP request to 101)', /onParserExecute|parserOnHeadersComplete/],
  ['WebSocket message in', /receiverOnMessage|socketOnData/],
  ['accept', /onconnection/],
  ['close', /destroy|socketOnClose|emitCloseNT|endReadableNT|onStreamRead|finish/]
]
const GROUPS: Array<[string, RegExp]> = [
  ['token check (fast-jwt)', /fast-jwt|createHmac|Hmac/],
  ['ws', /node_modules\/ws\/lib\//],
  ['own code', /dist-bench\/(routes|plugins|services|app)|bench\/server-baseline/],
  ['Fastify', /node_modules\/(fastify|find-my-way|@fastify|fast-querystring|avvio|pino|abstract-logging)\//],
  ['Node (JavaScript)', /JS:.*node:/]
]

/** The stacks of a `perf script` text: one array of frames (innermost first) per sample. */
function stacks (text: string): string[][] {
  const out: string[][] = []
  let cur: string[] | null = null
  for (const line of text.split('\n')) {
    if (line.trim() === '') {
      if (cur !== null && cur.length > 0) out.push(cur)
      cur = null
    } else if (line.startsWith('\t') || line.startsWith(' ')) {
      cur?.push(line.trim())
    } else {
      cur = []
    }
  }
  if (cur !== null && cur.length > 0) out.push(cur)
  return out
}

function main (): void {
  const [file, countArg] = process.argv.slice(2)
  const count = Number(countArg)
  if (file === undefined || !(count > 0)) {
    process.stderr.write('usage: node dist-bench/bench/perf-phases.js <perf script output> <count>\n')
    process.exit(2)
  }
  const all = stacks(readFileSync(file, 'utf8'))
  const phases = new Map<string, { samples: number, kernel: number, groups: Map<string, number> }>()
  for (const frames of all) {
    const text = frames.join('\n')
    const phase = PHASES.find(([, re]) => re.test(text))?.[0] ?? 'other (no phase frame)'
    const row = phases.get(phase) ?? { samples: 0, kernel: 0, groups: new Map<string, number>() }
    row.samples++
    if (frames[0]?.includes('[kernel.kallsyms]') === true) row.kernel++
    let group = 'runtime'
    for (const frame of frames) {
      const hit = GROUPS.find(([, re]) => re.test(frame))
      if (hit !== undefined) { group = hit[0]; break }
    }
    row.groups.set(group, (row.groups.get(group) ?? 0) + 1)
    phases.set(phase, row)
  }
  // perf samples at 999 Hz: one sample is about 1 ms of CPU.
  const us = (samples: number): string => (samples * 1001 / count).toFixed(1)
  console.log(`${all.length} samples, ${us(all.length)} µs per 1 of ${count}`)
  console.log('| phase | µs | of which in the kernel | by innermost group (µs) |')
  console.log('| --- | ---: | ---: | --- |')
  for (const [name, row] of [...phases].sort((a, b) => b[1].samples - a[1].samples)) {
    const groups = [...row.groups].sort((a, b) => b[1] - a[1]).map(([g, n]) => `${g} ${us(n)}`).join(', ')
    console.log(`| ${name} | ${us(row.samples)} | ${us(row.kernel)} | ${groups} |`)
  }
}

main()
