# syntax=docker/dockerfile:1
#
# kadnode in a container: one DHT node on UDP 6881, its ID, routing table and peers kept in /data.
#
#   docker build -t kadnode .
#   docker run -d --name kadnode -p 6881:6881/udp -p 6881:6881/tcp -v kadnode-data:/data kadnode
#   docker exec kadnode kadnode status
#
# With no --bootstrap/--seeds-file the node starts a new private network that others join through it
# (see bootstrap/README.md). To join through your own seeds, append to the default command, e.g.
#   docker run ... kadnode run --host 0.0.0.0 --port 6881 --data-dir /data --bootstrap 203.0.113.7:6881
# The public Mainline routers are in /usr/share/kadnode/bootstrap/mainline.txt and used only on opt-in.

ARG PYTHON_VERSION=3.11

# ---- build: one wheel for kadnode and one for each dependency -----------------------------------
FROM python:${PYTHON_VERSION}-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the build needs, so that editing tests or docs does not invalidate this layer.
COPY pyproject.toml README.md ./
COPY kadnode ./kadnode
RUN pip wheel --wheel-dir /wheels .

# ---- runtime: the wheels installed into a clean slim image ---------------------------------------
FROM python:${PYTHON_VERSION}-slim AS runtime

LABEL org.opencontainers.image.title="kadnode" \
      org.opencontainers.image.description="A Kademlia DHT node daemon that speaks the BitTorrent Mainline DHT (BEP 5, BEP 44)" \
      org.opencontainers.image.licenses="MIT"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Install from the build stage's wheels only (--no-index: nothing is fetched at this point); the
# bind mount keeps the wheel files themselves out of the image's layers.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels kadnode

# A fixed UID/GID, so that a bind-mounted host directory can be given to it: chown 10001:10001 DIR.
# /data is created and owned here, before VOLUME, so a new named volume starts with this owner.
RUN groupadd --system --gid 10001 kadnode \
    && useradd --system --uid 10001 --gid kadnode --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin kadnode \
    && mkdir -p /data \
    && chown kadnode:kadnode /data \
    && chmod 0700 /data

# Seed lists for --seeds-file (mainline.txt joins the public network: opt-in only).
COPY bootstrap/*.txt /usr/share/kadnode/bootstrap/

VOLUME /data
ENV KADNODE_DATA_DIR=/data
WORKDIR /data
USER kadnode

EXPOSE 6881/udp 6881/tcp

# `kadnode status` asks the daemon over its control socket (/data/control.sock) and exits non-zero
# when no daemon answers.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["kadnode", "status"]

# The daemon stops cleanly (saving its routing table) on SIGTERM, which `docker stop` sends.
STOPSIGNAL SIGTERM
ENTRYPOINT ["kadnode"]
CMD ["run", "--host", "0.0.0.0", "--port", "6881", "--data-dir", "/data"]
