import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import fastifyStatic from '@fastify/static'
import fastifyHelmet from '@fastify/helmet'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

export interface DashboardOptions {
  /** Default: this package's dist/public. */
  root?: string
  /** Serve the bundle's source map (`app.js.map`). Default false: it would publish the sources. */
  sourceMaps?: boolean
}

/** dist/routes/dashboard.js finds dist/public beside it; routes/dashboard.ts (run from source) finds it under dist/. */
const BUILT = ['../public', '../dist/public'].map(dir => fileURLToPath(new URL(dir, import.meta.url)))
const hasIndex = (dir: string): boolean => existsSync(join(dir, 'index.html'))

/** The dashboard at `/` (under the app's prefix): static files built by `npm run build`. */
async function dashboardRoutes (fastify: FastifyInstance, opts: DashboardOptions) {
  const root = opts.root ?? BUILT.find(hasIndex) ?? null
  if (root === null || !hasIndex(root)) {
    fastify.log.warn({ root }, 'dashboard is not built (npm run build): it is not served')
    return
  }
  if (fastify.prefix !== '') {
    // Relative URLs in the page (app.js, ws) need the trailing slash: /live -> /live/.
    fastify.addHook('onRequest', async (request, reply) => {
      const [path, query] = request.url.split('?', 2)
      if (path === fastify.prefix) return reply.redirect(`${path}/${query === undefined ? '' : `?${query}`}`, 301)
    })
  }
  // For the page's files only (encapsulated); no Referer, as the token may be in the address.
  await fastify.register(fastifyHelmet, {
    contentSecurityPolicy: {
      useDefaults: false,
      directives: {
        defaultSrc: ["'self'"],
        connectSrc: ["'self'", 'ws:', 'wss:'],
        imgSrc: ["'self'", 'data:'],
        objectSrc: ["'none'"],
        baseUri: ["'none'"],
        formAction: ["'self'"],
        frameAncestors: ["'none'"]
      }
    },
    frameguard: { action: 'deny' },
    referrerPolicy: { policy: 'no-referrer' },
    // HTTPS policy belongs to whoever terminates TLS; over plain http the header means nothing.
    strictTransportSecurity: false
  })
  await fastify.register(fastifyStatic, {
    root,
    globIgnore: opts.sourceMaps === true ? [] : ['**/*.map'],
    wildcard: false, // only the built files get routes: no catch-all that could shadow a host app's routes
    decorateReply: false, // leave reply.sendFile to a host app that has its own @fastify/static
    index: 'index.html',
    // File names carry no content hash: revalidate (ETag) on every load so a new build shows at once.
    cacheControl: false,
    setHeaders (res) { res.setHeader('cache-control', 'no-cache') }
  })
}

export default fp(dashboardRoutes, { fastify: '5.x', name: 'citas-dashboard', dependencies: [], encapsulate: true })
