# extauthz, the demo upstream and the config renderer (docker-compose.yml). Not needed for the
# tests or `make demo`, which run everything from .venv/.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY extauthz/ extauthz/
COPY demo/ demo/
COPY deploy/ deploy/
COPY envoy/ envoy/
RUN pip install --no-cache-dir . PyYAML \
 && mkdir -p /keys /config && chown nobody /keys /config
USER nobody
ENTRYPOINT []
CMD ["python", "-m", "extauthz", "serve", "--config", "/app/demo/extauthz.toml"]
