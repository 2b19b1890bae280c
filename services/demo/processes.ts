// Other processes, from Linux's /proc: `undefined` where /proc does not tell, so callers do less.
import { readdir, readFile, readlink } from 'node:fs/promises'

/** True while `pid` exists (a process of another user counts). */
export function isAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** The fields of /proc/<pid>/stat after the command name: [state, ppid, ...]. */
async function statFields (pid: number): Promise<string[] | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined)
  // The command name may itself contain spaces or parentheses.
  return stat?.slice(stat.lastIndexOf(')') + 2).split(' ')
}

/** When the process started (clock ticks since boot): with the pid, it names one process for good. */
export async function startTime (pid: number): Promise<string | undefined> {
  return (await statFields(pid))?.[19]
}

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

/** Live processes of executable `command` working in `cwd` (a real path): a postgres and its backends work in their data folder. */
export async function processesIn (cwd: string, command: string): Promise<number[] | undefined> {
  const pids = await numericEntries('/proc')
  if (pids === undefined) return undefined
  const found: number[] = []
  for (const pid of pids) {
    if (pid === process.pid || (await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '')).trim() !== command) continue
    if (await readlink(`/proc/${pid}/cwd`).catch(() => '') !== cwd) continue
    if ((await statFields(pid))?.[0] === 'Z') continue // exited, waiting to be reaped
    found.push(pid)
  }
  return found
}

/** The process listening on TCP `port` (any address), as "process <pid> (<command line>)". */
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
