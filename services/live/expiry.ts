import { CLOSE } from '../../protocol.js'
import type { Connection } from './hub.js'
import { tokenExpiringMessage } from './messages.js'

/**
 * One pass over the connections, run by a single periodic timer (no per-socket timers): a socket
 * whose token expires within `warningMs` gets one `token_expiring` notice; one whose token has
 * expired is closed with 4001. Returns how many were closed.
 */
export function sweepExpiry (connections: Iterable<Connection>, nowMs: number, warningMs: number): number {
  let closed = 0
  for (const conn of connections) {
    const exp = conn.access.exp
    if (exp === undefined) continue
    if (!conn.open) continue
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
