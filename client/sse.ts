/**
 * A parser for `text/event-stream` (Server-Sent Events), following the WHATWG HTML standard's
 * "interpreting an event stream": lines end with CRLF, LF or CR; `:` starts a comment; the fields
 * are `event`, `data`, `id` and `retry`; a blank line dispatches the event. The client's SSE
 * transport reads the stream with fetch, so it parses the stream itself instead of using EventSource
 * (which cannot send `Authorization`, nor choose its own `Last-Event-ID` and reconnection delays).
 */

/** One dispatched event. */
export interface StreamEvent {
  /** The `event` field, or `message` when there was none. */
  type: string
  /** The `data` lines joined with `\n`. */
  data: string
  /** The last event id at dispatch: the latest `id` field seen in the stream so far (ids persist across events). */
  lastEventId: string
}

export interface EventStreamHandlers {
  onEvent: (event: StreamEvent) => void
  /** A valid `retry` field: the server's reconnection delay, in ms. */
  onRetry?: (ms: number) => void
  /** A comment line (the text after the colon, without one leading space). */
  onComment?: (text: string) => void
}

/** Feed it decoded text in chunks of any size; it calls the handlers as whole lines arrive. */
export class EventStreamParser {
  private buffer = ''
  /** The previous chunk ended with CR: an LF at the start of the next one belongs to that line end. */
  private skipLf = false
  private firstLine = true
  private data = ''
  private hasData = false
  private eventType = ''
  private idBuffer = ''

  constructor (private readonly handlers: EventStreamHandlers) {}

  /** The last event id string: what a reconnect sends as `Last-Event-ID`. */
  lastEventId = ''

  feed (chunk: string): void {
    let text = chunk
    if (this.skipLf && text.length > 0) {
      this.skipLf = false
      if (text.charCodeAt(0) === 10) text = text.slice(1)
    }
    let start = 0
    const input = this.buffer + text
    // Scanning starts where the previous chunk's unfinished line began: no line end is in the buffer.
    for (let i = this.buffer.length; i < input.length; i++) {
      const c = input.charCodeAt(i)
      if (c !== 10 && c !== 13) continue
      this.line(input.slice(start, i))
      if (c === 13) {
        if (i + 1 < input.length) {
          if (input.charCodeAt(i + 1) === 10) i++
        } else {
          this.skipLf = true
        }
      }
      start = i + 1
    }
    this.buffer = input.slice(start)
  }

  private line (raw: string): void {
    let line = raw
    if (this.firstLine) {
      this.firstLine = false
      // A byte order mark at the start of the stream is dropped (TextDecoder usually has already).
      if (line.charCodeAt(0) === 0xfeff) line = line.slice(1)
    }
    if (line === '') {
      this.dispatch()
      return
    }
    const colon = line.indexOf(':')
    if (colon === 0) {
      this.handlers.onComment?.(line.slice(line.charCodeAt(1) === 32 ? 2 : 1))
      return
    }
    const field = colon === -1 ? line : line.slice(0, colon)
    let value = colon === -1 ? '' : line.slice(colon + 1)
    if (value.charCodeAt(0) === 32) value = value.slice(1)
    switch (field) {
      case 'event':
        this.eventType = value
        return
      case 'data':
        this.data += this.hasData ? '\n' + value : value
        this.hasData = true
        return
      case 'id':
        if (!value.includes('\u0000')) this.idBuffer = value
        return
      case 'retry':
        if (/^[0-9]+$/.test(value)) this.handlers.onRetry?.(Number(value))
        // Any other field is ignored.
    }
  }

  private dispatch (): void {
    this.lastEventId = this.idBuffer
    if (!this.hasData) {
      this.eventType = ''
      return
    }
    const event: StreamEvent = { type: this.eventType === '' ? 'message' : this.eventType, data: this.data, lastEventId: this.lastEventId }
    this.data = ''
    this.hasData = false
    this.eventType = ''
    this.handlers.onEvent(event)
  }
}
