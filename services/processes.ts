import { readdir, readFile, readlink } from 'node:fs/promises'

/**
 * What the process table says about other processes, read from Linux's /proc. Every function
 * answers `undefined` where /proc is missing or unreadable, so callers fall back to doing less.
 */

/** The command line of `pid`, arguments joined by spaces and cut to `max` characters. */
export async function commandLine (pid: number, max = 120): Promise<string | undefined> {
  const raw = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')
  const line = raw.split('\0').filter(s => s !== '').join(' ')
  if (line === '') return undefined
  return line.length > max ? `${line.slice(0, max - 3)}...` : line
}

async function numericEntries (dir: string): Promise<number[] | undefined> {
  const names = await readdir(dir).catch(() => undefined)
  return names?.filter(n => /^\d+$/.test(n)).map(Number)
}

/**
 * The process that listens on TCP `port` (any address), as "process <pid> (<command line>)",
 * or undefined when /proc does not tell (another user's process, another OS).
 */
export async function portHolder (port: number): Promise<string | undefined> {
  const inodes = new Set<string>()
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const text = await readFile(table, 'utf8').catch(() => '')
    for (const line of text.split('\n').slice(1)) {
      // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
      const cols = line.trim().split(/\s+/)
      const local = cols[1]
      if (local === undefined || cols[3] !== '0A' || cols[9] === undefined) continue
      if (Number.parseInt(local.slice(local.lastIndexOf(':') + 1), 16) === port) inodes.add(cols[9])
    }
  }
  if (inodes.size === 0) return undefined
  for (const pid of await numericEntries('/proc') ?? []) {
    for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])) {
      const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')
      const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1]
      if (inode !== undefined && inodes.has(inode)) {
        const cmd = await commandLine(pid)
        return cmd === undefined ? `process ${pid}` : `process ${pid} (${cmd})`
      }
    }
  }
  return undefined
}
