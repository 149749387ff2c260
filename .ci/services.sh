#!/usr/bin/env bash
# Install and start what the tests need; idempotent.
set -uo pipefail
if ! command -v dovecot >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd >/dev/null) \
    || echo "services: could not install dovecot-imapd" >&2
fi
# The deploy files' checks: systemd-analyze (systemd) and docker-compose (`docker compose config`).
if ! command -v systemd-analyze >/dev/null 2>&1 || ! command -v docker-compose >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    systemd docker-compose >/dev/null) || echo "services: could not install systemd and docker-compose" >&2
fi
# OCR for scanned PDFs and photos (documents/ocr.py): Tesseract with English; a real TTF font
# (DejaVu) for the tests that draw text into images.
if ! command -v tesseract >/dev/null 2>&1 || ! tesseract --list-langs 2>/dev/null | grep -qx eng; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tesseract-ocr tesseract-ocr-eng >/dev/null) \
    || echo "services: could not install tesseract-ocr" >&2
fi
if [ ! -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-dejavu-core >/dev/null) \
    || echo "services: could not install fonts-dejavu-core" >&2
fi
# Dovecot's packaged instance is not needed: the tests start their own on loopback.
if command -v systemctl >/dev/null 2>&1; then systemctl stop dovecot >/dev/null 2>&1 || true; fi
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || echo "services: redis did not start" >&2
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || echo "services: postgresql did not start" >&2
fi
exit 0
