# ai-employee in a container: `docker compose up` (compose.yaml) or
#   docker build -t ai-employee . && docker run -v "$PWD/AI_Employee_Vault:/vault" -p 127.0.0.1:8080:8080 ai-employee
# The vault is a volume: bind-mount the folder Obsidian (or Syncthing) uses on the host.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY requirements.txt pyproject.toml README.md CHANGELOG.md ./
COPY src ./src
# Wheels of the pinned dependencies and of the project, so the final image needs no compiler.
RUN pip wheel --no-cache-dir --wheel-dir /wheels -r requirements.txt ".[all]"

FROM python:3.11-slim-bookworm
# The OCR engine for scanned documents and images; nothing else from apt.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "ai-employee[all]" \
 && rm -rf /wheels \
 && useradd --system --uid 10001 --user-group --home-dir /home/aie --create-home aie \
 && mkdir -p /vault \
 && chown aie:aie /vault
ENV AIE_VAULT=/vault \
    AIE_HEALTH__HOST=0.0.0.0 \
    HEALTH_SERVER_PORT=8080 \
    PYTHONUNBUFFERED=1
WORKDIR /home/aie
VOLUME ["/vault"]
USER aie
EXPOSE 8080
# Liveness: the process and its loop answer on the control port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/livez' % os.environ.get('HEALTH_SERVER_PORT', '8080'), timeout=4)"]
# Foreground, stops gracefully on SIGTERM (docker stop): in-flight work finishes first.
STOPSIGNAL SIGTERM
ENTRYPOINT ["ai-employee"]
CMD ["start"]
