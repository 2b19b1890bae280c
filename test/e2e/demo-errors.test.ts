import t, { type Test } from 'tap'
import { existsSync } from 'node:fs'
import { realpath } from 'node:fs/promises'
import { createServer } from 'node:net'
import { runServer, type ServerProcess } from '../helper.js'
import { demoFolder } from '../fixtures/demo.js'
import { commandLine, processesIn } from '../../services/processes.js'

async function oneLine (t: Test, p: ServerProcess): Promise<string> {
  t.equal(await p.exited, 1, 'exit code 1')
  const lines = p.output().trim().split('\n')
  t.equal(lines.length, 1, `one line: ${p.output()}`)
  return lines[0] ?? ''
}

/** A port held by this test process, as another program would hold it. */
async function heldPort (t: Test): Promise<number> {
  const holder = createServer()
  await new Promise<void>(resolve => holder.listen(0, '127.0.0.1', resolve))
  t.teardown(() => holder.close())
  return (holder.address() as { port: number }).port
}

t.test('an EMBEDDED_PG_PORT held by another program: one line naming it and what to do', async (t) => {
  const folder = await demoFolder(t)
  const port = await heldPort(t)
  const p = folder.track(runServer(folder.env({ LOG_LEVEL: 'warn', EMBEDDED_PG_PORT: String(port) })))
  t.equal(await oneLine(t, p), `citas-live: the embedded PostgreSQL cannot listen on 127.0.0.1:${port}: the port is in use by process ${process.pid} ` +
    `(${await commandLine(process.pid) ?? ''}); stop it, or set EMBEDDED_PG_PORT to another port (0: any free port)`)
})

t.test('a PORT in use: one line, and the demo\'s PostgreSQL is stopped, not left running', async (t) => {
  const folder = await demoFolder(t)
  const port = await heldPort(t)
  const p = folder.track(runServer(folder.env({ LOG_LEVEL: 'error', PORT: String(port) })))
  t.match(await oneLine(t, p), `citas-live: port ${port} on 127.0.0.1 is in use by process ${process.pid} (`)
  t.same(await processesIn(await realpath(folder.dir), 'postgres'), [], 'no PostgreSQL left in the folder')
  t.notOk(existsSync(`${folder.dir}.lock`), 'the lock is released')
})
