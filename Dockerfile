# syntax=docker/dockerfile:1
# Portway container image: the request path compiled with mypyc in a build stage, then only
# the wheels installed into a slim runtime that runs as an unprivileged user and writes
# nothing outside /tmp (run it with a read-only root filesystem: --read-only --tmpfs /tmp).

ARG PYTHON=3.12

FROM python:${PYTHON}-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py mypyc.ini README.md ./
COPY src ./src
# the portway wheel (hot modules compiled by mypyc) and every dependency as wheels
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[events]"

FROM python:${PYTHON}-slim AS runtime
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin portway
COPY --from=build /wheels /wheels
# (an image whose build fell back to pure Python must not ship)
RUN pip install --no-cache-dir --no-index --find-links /wheels "portway[events]" \
 && rm -rf /wheels \
 && python -c "import portway.http.server as s, sys; sys.exit(0 if s.__file__.endswith('.so') else 'mypyc build failed')"
COPY deploy/docker/portway.yaml /etc/portway/portway.yaml
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp
USER 10001:10001
EXPOSE 8080 9901
# liveness of the gateway itself, on the admin listener (no token needed for the probe paths)
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9901/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["portway"]
CMD ["run", "-c", "/etc/portway/portway.yaml"]
