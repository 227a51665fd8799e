# privsql proxy image: the wire server (port 5433) over a PostgreSQL backend and budget store.
# Installs the package from pyproject.toml exactly as CI does (scripts/setup.sh: pip install of
# the project), without the test extra. docker-compose.yml builds and runs it.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY privsql ./privsql
RUN python -m pip install --upgrade pip && python -m pip install .

# sample data and example configs (privsql load-sample reads config/privsql.yaml's CSV tables)
COPY config ./config
COPY sample_data ./sample_data

RUN useradd --system --uid 10001 --home-dir /app privsql
USER privsql

EXPOSE 5433
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import socket; socket.create_connection(('127.0.0.1', 5433), 2).close()"
CMD ["privsql", "serve", "--config", "/etc/privsql/privsql.yaml", "--host", "0.0.0.0", "--port", "5433"]
