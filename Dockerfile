# syntax=docker/dockerfile:1
# One image for every hosepipe component; the command picks it:
#   docker run IMAGE ingest | poll | worker --engine kafka | sink | select --follow | api
#   docker run IMAGE topics create | db upgrade | config check
# Build: docker build -t hosepipe .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- build: wheel + venv
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Dependencies first, pinned by the constraints file, so code changes reuse this layer.
COPY deploy/constraints.txt /src/deploy/constraints.txt
RUN python -m venv /opt/hosepipe \
    && /opt/hosepipe/bin/pip install --constraint deploy/constraints.txt pip setuptools wheel
COPY . /src
# Build our wheel, then install it (and only its runtime dependencies) at pinned versions.
RUN /opt/hosepipe/bin/pip wheel --no-deps --wheel-dir /dist . \
    && /opt/hosepipe/bin/pip install --constraint deploy/constraints.txt /dist/hosepipe-*.whl \
    && /opt/hosepipe/bin/pip check

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
ARG RUNTIME_UID=10001
# tini is PID 1: it forwards SIGTERM to hosepipe (Python as PID 1 would ignore it) and reaps.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid "${RUNTIME_UID}" --gid 0 --no-create-home \
        --home-dir /var/lib/hosepipe --shell /usr/sbin/nologin hosepipe \
    && mkdir -p /var/lib/hosepipe /etc/hosepipe \
    && chown "${RUNTIME_UID}:0" /var/lib/hosepipe \
    && chmod 0775 /var/lib/hosepipe
COPY --from=build /opt/hosepipe /opt/hosepipe
COPY --chmod=0755 deploy/healthcheck.py /usr/local/bin/hosepipe-healthcheck
COPY hosepipe.yaml /etc/hosepipe/hosepipe.yaml
ENV PATH=/opt/hosepipe/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOSEPIPE_CONFIG_FILE=/etc/hosepipe/hosepipe.yaml \
    HOSEPIPE_DATA_DIR=/var/lib/hosepipe \
    HOSEPIPE_BIND_HOST=0.0.0.0 \
    HOSEPIPE_METRICS_PORT=9100 \
    HOSEPIPE_LOG_FORMAT=json
WORKDIR /var/lib/hosepipe
USER ${RUNTIME_UID}:0
EXPOSE 8080 8000 9100
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["hosepipe-healthcheck"]
ENTRYPOINT ["tini", "--", "hosepipe"]
CMD ["--help"]
