import { CLOSE } from '../../protocol.js'
import type { Connection } from './hub.js'
import { tokenExpiringMessage } from './messages.js'

/** One timer's pass (none per socket): one token_expiring notice within `warningMs`, 4001 once expired; returns the closed count. */
export function sweepExpiry (connections: Iterable<Connection>, nowMs: number, warningMs: number): number {
  let closed = 0
  for (const conn of connections) {
    const exp = conn.access.exp
    if (exp === undefined || !conn.open) continue
    const at = exp * 1000
    if (nowMs >= at) {
      conn.close(CLOSE.tokenExpired.code, CLOSE.tokenExpired.reason)
      closed++
    } else if (nowMs >= at - warningMs && conn.expiryNoticeFor !== exp) {
      conn.expiryNoticeFor = exp
      conn.send(tokenExpiringMessage(exp))
    }
  }
  return closed
}
