#!/usr/bin/env bash
# Install deid-gateway and the system packages it uses on Debian/Ubuntu.
#   tesseract-ocr(+eng): OCR for burned-in text (Clean Pixel Data)
#   orthanc(+dicomweb), dcmtk: real DICOMweb store and C-STORE client for the tests
#   dicom3tools: dciodvfy, the IOD validator (deidentify --validate, tests/test_iod_conformance.py)
#   rabbitmq-server, postgresql: the scale-out tests' broker and database (.ci/run starts them;
#     the tests connect as guest / postgres on 127.0.0.1, as this machine kind has them)
#   chromium, chromium-driver: the workbench's browser tests (Selenium drives Debian's Chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
if command -v apt-get >/dev/null 2>&1; then
  missing=""
  for pkg in tesseract-ocr tesseract-ocr-eng orthanc orthanc-dicomweb dcmtk dicom3tools \
             rabbitmq-server postgresql chromium chromium-driver; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
  done
  if [ -n "$missing" ]; then
    $SUDO apt-get update -qq
    # orthanc's package tries to start a service; there is no init system in containers
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing \
      || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends tesseract-ocr tesseract-ocr-eng dicom3tools
  fi
else
  echo "install.sh: no apt-get; install tesseract-ocr yourself for Clean Pixel Data" >&2
fi
python3 -m pip install -q -e '.[test]'
# FHIR REST store tests: a real FHIR engine (@medplum/fhir-router, versions pinned by
# tests/fhir_server/package-lock.json) run by Node.js >= 20; without npm those tests skip locally
if command -v npm >/dev/null 2>&1; then
  npm ci --prefix tests/fhir_server --no-audit --no-fund --loglevel=error
else
  echo "install.sh: no npm; install Node.js >= 20 with npm for the FHIR REST store tests" >&2
fi
