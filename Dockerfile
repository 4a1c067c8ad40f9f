# ugate container image.
#
#   docker build -t ugate .
#   docker run -d --name ugate -p 15022:15022 -v ugate-data:/var/lib/ugate ugate
#   docker exec ugate ugate id          # node ID, VIP6, SSH public key
#
# Build: the whole workspace with its dev tools (TypeScript, Vite, node-gyp for ssh2's native crypto
# binding). Runtime: Node's slim image, the `ugate` app with its production dependencies only
# (`pnpm deploy --prod`), run as an unprivileged user. See deploy/README.md.

ARG NODE_VERSION=20
ARG PNPM_VERSION=12.21.0

FROM node:${NODE_VERSION}-bookworm AS build
ARG PNPM_VERSION
# node-gyp builds against the image's own Node headers instead of downloading them.
ENV npm_config_nodedir=/usr/local \
    CI=true
RUN npm install --global pnpm@${PNPM_VERSION}
WORKDIR /src
# Dependencies first (from the lockfile alone), so source changes reuse this layer.
COPY pnpm-lock.yaml pnpm-workspace.yaml ./
RUN pnpm fetch
COPY . .
RUN pnpm install --frozen-lockfile --offline \
 && pnpm build \
 && pnpm --filter ugate deploy --prod /out \
 && node /out/bin/ugate.js check -c deploy/ugate.yaml \
 && rm -rf /out/pnpm-lock.yaml /out/pnpm-workspace.yaml \
 && find /out/node_modules -type d -name obj.target -prune -exec rm -rf {} +

FROM node:${NODE_VERSION}-bookworm-slim AS runtime
ENV NODE_ENV=production
RUN groupadd --system --gid 10001 ugate \
 && useradd --system --uid 10001 --gid ugate --home-dir /var/lib/ugate --shell /usr/sbin/nologin ugate \
 && install -d -o ugate -g ugate -m 0700 /var/lib/ugate \
 && install -d -m 0755 /etc/ugate
COPY --from=build /out /opt/ugate
RUN ln -s /opt/ugate/bin/ugate.js /usr/local/bin/ugate
COPY deploy/ugate.yaml /etc/ugate/ugate.yaml
USER 10001:10001
# `ugate id`, `ugate check` … without -c read ./ugate.yaml: this one.
WORKDIR /etc/ugate
VOLUME ["/var/lib/ugate"]
# SSH and HBONE carriers; SOCKS5, HTTP proxy and admin (these three listen on the container's
# loopback unless the config or UGATE_* variables say otherwise).
EXPOSE 15022 15008 15080 15081 15000
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:15000/healthz/ready').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# SIGTERM drains live streams for limits.drainMs (10 s): stop with `docker stop -t 30`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["ugate"]
CMD ["run", "-c", "/etc/ugate/ugate.yaml"]
