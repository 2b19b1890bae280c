# Build stage: compile TypeScript with the dev dependencies.
FROM node:22-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY *.ts ./
COPY plugins plugins
COPY routes routes
COPY services services
COPY db db
COPY client client
COPY dashboard dashboard
COPY scripts/build-dashboard.mjs scripts/
RUN npm run build

# Runtime stage: production dependencies only, so no embedded PostgreSQL (a dev dependency; set DATABASE_URL).
#   docker run -p 8080:8080 -e DATABASE_URL=postgres://... -e JWT_SECRET=... citas-live
#   docker run --rm -e DATABASE_URL=postgres://... citas-live node dist/db/migrate.js   # migrations
# test/e2e/image.test.ts replays these steps without Docker: keep them to COPY, ENV and npm ci.
FROM node:22-bookworm-slim
ENV NODE_ENV=production PORT=8080 HOST=0.0.0.0
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --omit=optional --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist dist
COPY db/migrations db/migrations
# Files stay root-owned and read-only to the app's user.
USER node
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
CMD ["node", "dist/server.js"]
