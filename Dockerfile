# Production image: `docker build -t lucy . && docker run --env-file .env -p 3000:3000 lucy`.
# Set DATABASE_URL (and REDIS_URL when running several instances); the embedded database is for
# development only and is not in this image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    LOG_FORMAT=json \
    PORT=3000

WORKDIR /app
COPY pyproject.toml README.md ./
COPY lucy ./lucy
COPY scripts/fetch_model.py ./scripts/fetch_model.py
# The sentence model for tool selection goes into /app/.lucy (LUCY_DATA_DIR's default); its
# vector cache is written there at run time, so the directory belongs to the lucy user.
RUN pip install --no-cache-dir uv==0.13.9 \
 && uv pip install --system --no-cache . \
 && python scripts/fetch_model.py /app/.lucy \
 && useradd --system --uid 10001 --home-dir /app lucy \
 && chown -R lucy /app/.lucy
USER lucy

EXPOSE 3000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s CMD \
  python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/healthz', timeout=2)"
CMD ["lucy", "serve"]
