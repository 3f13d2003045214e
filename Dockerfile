# syntax=docker/dockerfile:1
#
# mailrules daemon image: docs/container.md.
#
#   docker build -t mailrules .
#   docker run -v ./mailrules.toml:/etc/mailrules/mailrules.toml:ro \
#              -v ./rules.d:/etc/mailrules/rules.d:ro -v mailrules-state:/var/lib/mailrules mailrules
#
# Both stages use the same base so the venv's interpreter symlinks resolve in the final stage.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: the wheel, and a venv with it and its dependencies ------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# Only what the wheel is built from (pyproject.toml: hatch version path, readme, force-include).
COPY pyproject.toml README.md ./
COPY grammar/ grammar/
COPY mailrules/ mailrules/

# The wheel is built in an isolated build env (hatchling from PyPI), then installed with its
# runtime dependencies and the `postgres` extra (psycopg 3 with its own libpq in the binary
# wheel, psycopg-pool: a PostgreSQL state shared by several daemons) into /opt/venv; pip's and
# the build's caches stay in this stage.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && for wheel in /wheels/mailrules-*.whl; do /opt/venv/bin/pip install "${wheel}[postgres]"; done \
 && /opt/venv/bin/mailrules --version \
 && /opt/venv/bin/python -c "import psycopg, psycopg_pool; print('psycopg', psycopg.__version__)"

# --- final: the venv, tini, a non-root user ----------------------------------------------------------
FROM ${PYTHON_IMAGE}

ARG VERSION=dev
LABEL org.opencontainers.image.title="mailrules" \
      org.opencontainers.image.description="Mail-processing rules engine and IMAP automation daemon" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"

# tini as PID 1: forwards SIGTERM/SIGHUP to the daemon and reaps children.
# Unpinned on purpose: the Debian security updates of the release are wanted at each build.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 mailrules \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/mailrules --no-create-home \
            --shell /usr/sbin/nologin mailrules \
 && mkdir -p /etc/mailrules/rules.d /var/lib/mailrules \
 && chown 10001:10001 /var/lib/mailrules \
 && chmod 0750 /var/lib/mailrules

COPY --from=builder /opt/venv /opt/venv
# The starter rule set is the default; mount your own over /etc/mailrules/rules.d.
COPY rules.d/ /etc/mailrules/rules.d/

# The daemon's own default is 127.0.0.1:9464 (unreachable from outside a container): listen on
# every interface so Prometheus can scrape it. Environment overrides win over the file's keys;
# set MAILRULES_STATE / MAILRULES_METRICS__LISTEN (not `state` / `listen`) to change these.
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MAILRULES_CONFIG=/etc/mailrules/mailrules.toml \
    MAILRULES_STATE=/var/lib/mailrules/state.db \
    MAILRULES_METRICS__LISTEN=0.0.0.0:9464

VOLUME ["/var/lib/mailrules"]
WORKDIR /var/lib/mailrules
USER 10001:10001
EXPOSE 9464

# /healthz answers 200 while the process serves HTTP; probes 127.0.0.1 for a wildcard listen.
# An empty MAILRULES_METRICS__LISTEN disables the server, and with it this check (exit 0).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; listen = os.environ.get('MAILRULES_METRICS__LISTEN', '0.0.0.0:9464'); host, _, port = listen.rpartition(':'); host = host.strip('[]'); host = '127.0.0.1' if host in ('', '0.0.0.0') else '[::1]' if host == '::' else '[' + host + ']' if ':' in host else host; sys.exit(0) if not listen else urllib.request.urlopen('http://' + host + ':' + port + '/healthz', timeout=4).close()"]

# The daemon finishes the batch in hand and logs out within 8 s of SIGTERM (docker stop waits 10 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "mailrules"]
CMD ["daemon", "--config", "/etc/mailrules/mailrules.toml"]
