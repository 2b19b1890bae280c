import { CHANNEL_PREFIX, connect, decodeToken, negociosOf, type CitasLiveClient, type CitasLiveError, type StateChange, type Stats } from '../client/index.js'

const STORAGE_KEY = 'citas-live:token'
const FIGURES = ['citas_hoy', 'total_citas', 'citas_completadas', 'citas_canceladas'] as const
const TRANSPORT_LABELS: Record<StateChange['transport'], { text: string, title: string }> = {
  websocket: { text: 'vía WebSocket', title: 'Conexión WebSocket' },
  sse: { text: 'vía SSE', title: 'Server-Sent Events: la red no deja pasar WebSocket, las cifras llegan por HTTP' }
}
const STATE_LABELS: Record<StateChange['state'], string> = {
  connecting: 'Conectando…',
  connected: 'Conectado',
  reconnecting: 'Reconectando',
  disconnected: 'Desconectado'
}
/** The server's 401 reasons, for people. */
const REFUSALS: Record<string, string> = {
  'token expired': 'el token ha caducado',
  'invalid token signature': 'la firma no es válida (¿firmado con otro secreto?)',
  'malformed token': 'el token está mal formado',
  'missing token': 'falta el token'
}

function element<T extends HTMLElement> (id: string): T {
  const el = document.getElementById(id)
  if (el === null) throw new Error(`#${id} is missing from index.html`)
  return el as T
}

const pill = element<HTMLSpanElement>('pill')
const retry = element<HTMLSpanElement>('retry')
const lastUpdate = element<HTMLTimeElement>('last-update')
const transport = element<HTMLSpanElement>('transport')
const message = element<HTMLParagraphElement>('message')
const list = element<HTMLElement>('negocios')
const form = element<HTMLFormElement>('token-form')
const input = element<HTMLTextAreaElement>('token-input')
const template = element<HTMLTemplateElement>('negocio-template')

let client: CitasLiveClient | null = null

/** The WebSocket endpoint next to this page: /ws beside /, /live/ws beside /live/. */
function wsUrl (): string {
  const url = new URL('ws', location.href)
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:'
  url.search = ''
  url.hash = ''
  return url.toString()
}

/** ?token= is read once and removed from the address bar, so it is not bookmarked, shared or kept in history. */
function takeTokenFromAddress (): string | null {
  const url = new URL(location.href)
  const token = url.searchParams.get('token')
  if (token === null) return null
  url.searchParams.delete('token')
  history.replaceState(history.state, '', url.pathname + url.search + url.hash)
  return token.trim()
}

/** ?negocios=a,b picks the negocios to show, for tokens that do not name them (an admin role). */
function negociosFromAddress (): string[] | null {
  const value = new URL(location.href).searchParams.get('negocios')
  if (value === null) return null
  const ids = value.split(',').map(s => s.trim()).filter(s => s !== '')
  return ids.length > 0 ? ids : null
}

function time (seconds: number): string {
  return new Date(seconds * 1000).toLocaleTimeString('es-ES')
}

function showMessage (text: string | null): void {
  message.textContent = text ?? ''
  message.hidden = text === null
}

/** Which transport carries the figures, beside the time of the last update. */
function showTransport (which: StateChange['transport']): void {
  const label = TRANSPORT_LABELS[which]
  transport.dataset.transport = which
  transport.textContent = label.text
  transport.title = label.title
  transport.hidden = false
}

function showState (state: StateChange['state'], delay?: number): void {
  pill.dataset.state = state
  pill.textContent = STATE_LABELS[state]
  retry.textContent = state === 'reconnecting' && delay !== undefined && delay >= 1000 ? `nuevo intento en ${Math.round(delay / 1000)} s` : ''
  list.classList.toggle('stale', state !== 'connected')
}

/** Stops, forgets the token and asks for another one. */
function askForToken (why: string | null): void {
  client?.close()
  client = null
  sessionStorage.removeItem(STORAGE_KEY)
  list.replaceChildren()
  transport.hidden = true
  showState('disconnected')
  showMessage(why)
  form.hidden = false
  input.focus()
}

function section (negocioId: string): HTMLElement | null {
  for (const el of list.querySelectorAll<HTMLElement>('section.negocio')) {
    if (el.dataset.negocio === negocioId) return el
  }
  return null
}

function render (negocios: string[]): void {
  list.replaceChildren(...negocios.map((id) => {
    const fragment = template.content.cloneNode(true) as DocumentFragment
    const el = fragment.querySelector<HTMLElement>('section.negocio') as HTMLElement
    el.dataset.negocio = id
    ;(el.querySelector('.negocio-name') as HTMLElement).textContent = id
    return el
  }))
}

function showNegocioError (channel: string | undefined, text: string): void {
  const el = channel?.startsWith(CHANNEL_PREFIX) === true ? section(channel.slice(CHANNEL_PREFIX.length)) : null
  const slot = el?.querySelector<HTMLElement>('.negocio-error')
  if (slot === null || slot === undefined) return
  slot.textContent = text
  slot.hidden = false
}

function onStats (stats: Stats): void {
  const el = section(stats.negocio_id)
  if (el === null) return
  for (const figure of FIGURES) {
    const card = el.querySelector<HTMLElement>(`[data-figure="${figure}"]`)
    const value = card?.querySelector<HTMLElement>('.value')
    if (card === null || card === undefined || value === null || value === undefined) continue
    const text = String(stats[figure])
    if (value.textContent !== text && value.textContent !== '—') {
      card.classList.remove('changed')
      void card.offsetWidth // restart the animation
      card.classList.add('changed')
    }
    value.textContent = text
  }
  const updated = el.querySelector<HTMLTimeElement>('.updated time') as HTMLTimeElement
  updated.textContent = time(stats.timestamp)
  updated.dateTime = new Date(stats.timestamp * 1000).toISOString()
  ;(el.querySelector('.negocio-error') as HTMLElement).hidden = true
  lastUpdate.textContent = time(stats.timestamp)
}

function onError (error: CitasLiveError): void {
  switch (error.code) {
    case 'unauthorized':
      askForToken(`El servidor rechazó el token: ${REFUSALS[error.message] ?? error.message}. Introduce otro token.`)
      return
    case 'forbidden':
      showNegocioError(error.channel, 'Tu token no da acceso a este negocio.')
      return
    case 'not_found':
      showNegocioError(error.channel, 'Este negocio no existe.')
      return
    case 'unavailable':
      showNegocioError(error.channel, 'La base de datos no responde: las cifras se actualizarán cuando vuelva.')
      return
    case 'closed':
      showMessage(`El servidor cerró la conexión (${error.closeCode ?? '?'}: ${error.message}) y no se vuelve a conectar.`)
  }
}

function start (token: string): void {
  client?.close()
  client = null
  showMessage(null)
  const claims = decodeToken(token)
  if (claims === null) {
    askForToken('Ese texto no es un token JWT: copia el token completo (tres partes separadas por puntos).')
    return
  }
  const negocios = negociosFromAddress() ?? negociosOf(claims)
  if (negocios.length === 0) {
    askForToken('El token no nombra ningún negocio (negocio_id o negocios). Con un token de administrador, añade ?negocios=id1,id2 a la dirección.')
    return
  }
  sessionStorage.setItem(STORAGE_KEY, token)
  form.hidden = true
  render(negocios)
  // transport 'auto' (the default): WebSocket, or Server-Sent Events where a proxy lets only plain HTTP through.
  client = connect({
    url: wsUrl(),
    token,
    channels: negocios,
    onState: (change) => {
      showState(change.state, change.delay)
      showTransport(change.transport)
    },
    onStats,
    onError
  })
}

form.addEventListener('submit', (event) => {
  event.preventDefault()
  const token = input.value.trim()
  if (token !== '') start(token)
})

const initial = takeTokenFromAddress() ?? sessionStorage.getItem(STORAGE_KEY)
if (initial !== null && initial !== '') start(initial)
else askForToken(null)
