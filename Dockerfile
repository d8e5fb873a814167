# specd on NVIDIA GPUs: CUDA 12 + cuDNN 9 runtime, Node.js 22, onnxruntime-node with its CUDA
# execution provider, the bundled specd-pair models.
#   docker build -t specd .
#   docker run --gpus all -p 8000:8000 specd
# Serves the OpenAI-compatible API on port 8000 with --device cuda; pass other `specd serve`
# flags after the image name (e.g. `docker run --gpus all -p 8000:8000 specd --policy fixed --k 4`).

ARG NODE_VERSION=22
FROM node:${NODE_VERSION}-bookworm-slim AS node

FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 AS build
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules /usr/local/lib/node_modules
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY src ./src
COPY bench ./bench
COPY bin ./bin
# Install (building with TypeScript), fetch the CUDA 12 execution provider, then drop dev dependencies.
RUN npm ci --no-audit --no-fund \
 && npm run install-cuda \
 && npm prune --omit=dev --no-audit --no-fund

FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04
COPY --from=node /usr/local/bin/node /usr/local/bin/node
RUN useradd --create-home --uid 10001 specd
WORKDIR /app
COPY --from=build --chown=specd:specd /app /app
COPY --chown=specd:specd models ./models
USER specd
ENV NODE_ENV=production
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:8000/health').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "/app/bin/specd.js", "serve", "--host", "0.0.0.0", "--port", "8000", "--device", "cuda"]
