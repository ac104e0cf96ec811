# The worker as a container image: `python -m agent start`, nothing else.
# livekit-server is not part of it; point LIVEKIT_URL at a server or LiveKit Cloud.
# Build:  docker build -t voice-agent-worker .
# Run:    docker run --env-file .env voice-agent-worker   (see docs/container.md)

# pyproject.toml targets Python 3.11: the official slim image of that version.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS builder
# A CA bundle for pip behind a TLS-inspecting proxy, mounted for the build only
# (`--volume host.crt:/run/host-ca.crt:ro --build-arg PIP_CERT=/run/host-ca.crt`).
# A build argument, never an ENV: nothing of it reaches the image.
ARG PIP_CERT=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# The dependencies first, in their own layer: it changes only with the pins.
COPY pyproject.toml constraints.txt ./
RUN python -m venv /opt/venv \
    && python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > requirements.txt \
    && /opt/venv/bin/pip install ${PIP_CERT:+--cert "$PIP_CERT"} -c constraints.txt -r requirements.txt
# Then the sources of the wheel: .dockerignore admits prompts, services and agent only.
COPY . ./
# 1. The wheel, installed against the same pins and checked.
# 2. Model preload the way livekit-agents documents it (`python -m livekit.agents
#    download-files`: every installed plugin's files). In 1.8.9 the local VAD and
#    end-of-turn models are compiled into livekit-local-inference's library, so there
#    is nothing to fetch; loading both here proves the venv can run them offline.
# 3. The runtime user, staged for the final stage, which runs no command at all: a
#    build host's --volume mount (the CA bundle above) leaves its mount point in every
#    stage that runs one, and nothing of it may reach the image.
RUN /opt/venv/bin/pip wheel ${PIP_CERT:+--cert "$PIP_CERT"} --no-deps -w /wheels . \
    && /opt/venv/bin/pip install ${PIP_CERT:+--cert "$PIP_CERT"} -c constraints.txt /wheels/*.whl \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/python -m livekit.agents download-files \
    && /opt/venv/bin/python -c "import livekit.local_inference as li; li.init_vad(); li.init_eot()" \
    && groupadd --system --gid 10001 agent \
    && useradd --system --uid 10001 --gid agent --no-create-home --home-dir /home/agent \
        --shell /usr/sbin/nologin agent \
    && mkdir -p /stage/etc \
    && cp /etc/passwd /etc/group /stage/etc/ \
    && install -d -o 10001 -g 10001 /stage/home/agent

FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/agent \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOG_FORMAT=json \
    AGENT_HTTP_PORT=8081 \
    PROMETHEUS_PORT=9464
# /etc/passwd and /etc/group: the same base's files plus the one user; its home.
COPY --from=builder /stage/ /
COPY --from=builder /opt/venv /opt/venv
USER 10001:10001
WORKDIR /home/agent
# livekit-agents' health endpoint (AGENT_HTTP_PORT) and Prometheus (PROMETHEUS_PORT).
EXPOSE 8081 9464
# No curl in the image: the check is Python. 200 once the worker is connected to LiveKit.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + (os.environ.get('AGENT_HTTP_PORT') or '8081') + '/', timeout=4)"]
# SIGTERM drains: running calls finish, no new ones are taken, then the process exits 0.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "agent", "start"]
