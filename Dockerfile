# deid-gateway: batch CLI and (with `deid-gateway serve`, once available) the service.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng dicom3tools \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 deid
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
