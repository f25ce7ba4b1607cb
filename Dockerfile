# deid-gateway: the batch CLI, the service (serve) and its pipeline workers (worker).
# docker-compose.yml runs intake + two workers + PostgreSQL + RabbitMQ from this image.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng dicom3tools \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 deid \
 && mkdir -p /var/lib/deid-gateway && chown deid /var/lib/deid-gateway && chmod 700 /var/lib/deid-gateway
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY profiles ./profiles
RUN pip install --no-cache-dir .
USER deid
# The pseudonymisation key is never baked in: pass DEID_GATEWAY_KEY or mount a key file
# (e.g. -v /secure/keys:/keys:ro -e DEID_GATEWAY_KEY_DIR=/keys).
ENV OMP_THREAD_LIMIT=1
ENTRYPOINT ["deid-gateway"]
CMD ["--help"]
