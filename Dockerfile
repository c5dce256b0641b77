# dlaasd as an image: the daemon, dlaasctl, and the MinIO server it bundles.
#
#   docker build -t dlaas/dlaasd:latest .
#
# The daemon drives the host's Docker Engine through its socket, and the run folders it
# hands to that engine as bind-mount sources are host paths: mount the state folder at the
# same path inside and outside. See "Running dlaasd in a container" in README.md:
#
#   docker run -d --name dlaasd --init \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     -v /var/lib/dlaas-docker:/var/lib/dlaas-docker \
#     -v /run/dlaas-docker:/run/dlaas \
#     dlaas/dlaasd:latest --state-dir /var/lib/dlaas-docker
#
# Where no image registry is reachable, scripts/build-daemon-image builds local stand-ins
# for the two base images from Debian packages and passes them as GO_IMAGE / BASE_IMAGE.
# The legacy builder and BuildKit both build this file (no RUN --mount, no heredocs).

# Go >= 1.24 (MinIO's go.mod), on the Debian release BASE_IMAGE is built on.
ARG GO_IMAGE=golang:1.24-bookworm
# Python >= 3.11 with the venv module; the final image is this plus the venv and MinIO.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- stage 1: MinIO, built from source as scripts/install-minio does --------------------
FROM ${GO_IMAGE} AS minio
# The last commit of the community server (github.com/minio/minio, archived), as the Go
# module proxy serves it. Keep in step with MINIO_VERSION in scripts/install-minio
# (scripts/build-daemon-image passes that value).
ARG MINIO_MODULE=github.com/minio/minio
ARG MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
ARG GOPROXY=https://proxy.golang.org,direct
# PEM certificates trusted while building only (a TLS-inspecting proxy's CA); they do not
# reach the final image. scripts/build-daemon-image passes /usr/local/share/ca-certificates.
ARG BUILD_CA_CERTS=""
ENV CGO_ENABLED=0 GOFLAGS=-modcacherw GOBIN=/out GOPROXY=${GOPROXY}
RUN set -e; \
    if [ -n "$BUILD_CA_CERTS" ]; then \
        { cat /etc/ssl/certs/ca-certificates.crt; printf '%s\n' "$BUILD_CA_CERTS"; } >/tmp/ca.pem; \
        export SSL_CERT_FILE=/tmp/ca.pem GIT_SSL_CAINFO=/tmp/ca.pem; \
    fi; \
    go version; \
    go install -trimpath -ldflags "-s -w" "${MINIO_MODULE}@${MINIO_VERSION}"; \
    /out/minio --version; \
    rm -rf "$(go env GOMODCACHE)" "$(go env GOCACHE)" /tmp/ca.pem

# --- stage 2: the Python environment (pip runs here, never in the final image) ---------
FROM ${BASE_IMAGE} AS python
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG BUILD_CA_CERTS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_INDEX_URL=${PIP_INDEX_URL} \
    PIP_CONFIG_FILE=/build/pip.conf
RUN set -e; \
    python3 -c 'import sys; assert sys.version_info >= (3, 11), sys.version'; \
    python3 -m venv /opt/dlaasd; \
    mkdir -p /build; : >/build/pip.conf; \
    if [ -n "$BUILD_CA_CERTS" ]; then \
        { cat /etc/ssl/certs/ca-certificates.crt; printf '%s\n' "$BUILD_CA_CERTS"; } >/build/ca.pem; \
        printf '[global]\ncert = /build/ca.pem\n' >/build/pip.conf; \
    fi
# The dependencies first, from pyproject.toml alone: a change to the code reuses this layer.
COPY pyproject.toml /src/
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("/src/pyproject.toml", "rb"))["project"]["dependencies"]))' \
        >/build/requirements.txt \
    && /opt/dlaasd/bin/pip install -r /build/requirements.txt
COPY . /src/
RUN /opt/dlaasd/bin/pip install --no-deps /src \
    && /opt/dlaasd/bin/pip uninstall -y -q pip setuptools \
    && /opt/dlaasd/bin/dlaasd --version

# --- stage 3: the daemon ------------------------------------------------------------------
FROM ${BASE_IMAGE}
ARG MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
COPY --from=minio /out/minio /usr/local/bin/minio
COPY --from=python /opt/dlaasd /opt/dlaasd
# Root: dlaasd runs in system mode, hands each run folder to the submitter's uid (chown)
# and runs the training as that uid. Access to the Docker socket is root's anyway.
# DLAAS_STATE_DIR / DLAAS_SOCKET are the system-mode defaults, also when run with --user;
# --state-dir and --socket win over them.
ENV PATH=/opt/dlaasd/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    DLAAS_STATE_DIR=/var/lib/dlaas \
    DLAAS_SOCKET=/run/dlaas/dlaasd.sock
RUN mkdir -p /var/lib/dlaas /run/dlaas /etc/dlaas \
    && dlaasd --version && minio --version
LABEL org.opencontainers.image.title="dlaasd" \
      org.opencontainers.image.description="Deep learning as a service on one GPU workstation: queue FfDL training runs in Docker (daemon, dlaasctl, bundled MinIO)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      dlaas.minio-version="${MINIO_VERSION}"
# No VOLUME: an anonymous volume would put the state at a path the host's Docker Engine
# cannot see; the state folder must be bind-mounted at the same path inside and outside.
STOPSIGNAL SIGTERM
ENTRYPOINT ["dlaasd"]
