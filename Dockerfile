# syntax=docker/dockerfile:1
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    REELWATCH_CONFIG=/app/feeds.yaml \
    REELWATCH_DATABASE_URL=sqlite:////data/reelwatch.db

WORKDIR /app
COPY pyproject.toml README.md ./
COPY monitor ./monitor
COPY alerts ./alerts
COPY storage ./storage
RUN pip install '.[postgres]'
COPY feeds.yaml ./

RUN useradd --system --uid 10001 --home-dir /app reelwatch \
    && mkdir -p /data && chown reelwatch /data
USER reelwatch
VOLUME ["/data"]

HEALTHCHECK --interval=60s --timeout=10s --start-period=60s --retries=3 \
    CMD ["reelwatch", "health"]
CMD ["reelwatch", "run"]
