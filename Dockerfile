# extauthz, the demo upstream and `extauthz envoy-config` (docker-compose.yml), and the image
# the Kubernetes manifests run (deploy/kubernetes/, docs/deploy.md). Not needed for the tests or
# `make demo`, which run everything from .venv/.
#
# Runs as the numeric user 65534 (nobody), so that Kubernetes' runAsNonRoot can verify it, and
# writes nothing at run time: the root filesystem may be read-only (bytecode is compiled at
# install time; settings, keys and the admin token are mounted read-only).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY extauthz/ extauthz/
COPY demo/ demo/
COPY deploy/ deploy/
COPY envoy/ envoy/
RUN pip install --no-cache-dir . PyYAML \
 && mkdir -p /keys /config && chown 65534:65534 /keys /config
USER 65534:65534
ENTRYPOINT []
CMD ["python", "-m", "extauthz", "serve", "--config", "/app/demo/extauthz.toml"]
