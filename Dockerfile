# Watchpost server image (production profile: PostgreSQL, Redis, optional Keycloak).
#   docker build -t watchpost .
#   docker run -e DATABASE_URL=... -e REDIS_URL=... -p 8000:8000 watchpost
# The default command applies migrations, then serves; docker-compose.yml runs
# the migration once as its own step and starts replicas with `serve` only.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 \
    PORT=8000

WORKDIR /srv/watchpost

# Dependencies first so code edits do not reinstall them: install the project's
# requirements from pyproject.toml with a stub package, then the real code.
COPY pyproject.toml README.md ./
RUN mkdir app && touch app/__init__.py && pip install . && pip uninstall -y watchpost && rm -rf app build

COPY app ./app
COPY migrations ./migrations
COPY actions.json ./
RUN pip install --no-deps . && rm -rf build *.egg-info \
    && useradd --system --uid 10001 --user-group --home-dir /srv/watchpost --shell /usr/sbin/nologin watchpost

# Run from /srv/watchpost: Alembic reads [tool.alembic] from pyproject.toml here,
# and actions.json sits next to it.
USER watchpost

EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=3).status == 200 else 1)"]

CMD ["sh", "-c", "python -m app migrate && exec python -m app serve"]
