import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import fastifySwagger from '@fastify/swagger'
import { createRequire } from 'node:module'
import { SECURITY_SCHEMES } from '../routes/schemas.js'

export interface OpenApiOptions {
  /** Also serve Swagger UI at `<prefix>/documentation` (needs the optional @fastify/swagger-ui package). */
  ui?: boolean
  /** Version shown in the document's info; default the package's (package.json). */
  version?: string
}

/** The version in citas-live's package.json (the package imports itself by name, from the sources or dist/). */
const packageVersion = (): string => (createRequire(import.meta.url)('citas-live/package.json') as { version: string }).version

/** The routes' OpenAPI document at `<prefix>/documentation/json` (and `ui`); a host's own @fastify/swagger gets them in its own. */
async function openApiPlugin (fastify: FastifyInstance, opts: OpenApiOptions & { prefix: string }) {
  if (!fastify.hasDecorator('swagger')) {
    await fastify.register(fastifySwagger, {
      openapi: {
        openapi: '3.1.0',
        info: {
          title: 'citas-live',
          description: 'Live appointment statistics. The WebSocket protocol behind GET /ws is described by docs/asyncapi.yaml.',
          version: opts.version ?? packageVersion()
        },
        tags: [
          { name: 'notify', description: 'Called by the REST API that owns the citas' },
          { name: 'websocket', description: 'The upgrade endpoint; messages in the AsyncAPI document' },
          { name: 'health', description: 'Probes for load balancers and orchestrators' }
        ],
        components: { securitySchemes: SECURITY_SCHEMES }
      },
      // @fastify/websocket hides every websocket route; show ours, whose schema only documents the upgrade.
      transform: ({ schema, url, route }) => ({
        url,
        schema: route.websocket === true && schema?.tags?.includes('websocket') === true ? { ...schema, hide: false } : schema
      })
    })
  }
  const routePrefix = `${opts.prefix}/documentation`
  if (opts.ui === true) {
    const ui = await import('@fastify/swagger-ui').catch((err: unknown) => {
      throw new Error('citas-live: openapi.ui needs the @fastify/swagger-ui package (npm install @fastify/swagger-ui)', { cause: err })
    })
    // Swagger UI also serves the document at <routePrefix>/json.
    await fastify.register(ui.default, { routePrefix })
    return
  }
  fastify.get(`${routePrefix}/json`, { schema: { hide: true } }, async () => fastify.swagger())
}

export default fp(openApiPlugin, { fastify: '5.x', name: 'citas-openapi' })
