"""Keep libraries from printing data values: their warnings and logs may quote PHI.

pydicom warns with the offending value ("Invalid value for VR UI: '...'"), deid logs recipe
debugging, urllib3 and dicomweb-client log request lines (dicomweb-client its headers too: a
bearer token) whose query strings name an MRN when a cohort export searches a PACS or an EHR;
the gateway reports reason codes instead. Called once per process at start-up.
"""

from __future__ import annotations

import logging
import os
import warnings


def silence_libraries() -> None:
    os.environ.setdefault("MESSAGELEVEL", "QUIET")  # the deid package's own logger
    import pydicom.config

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    for name in (
        "pydicom",
        "deid",
        "presidio-analyzer",
        "presidio_analyzer",
        "pynetdicom",
        "urllib3",
        "dicomweb_client",
    ):
        logger = logging.getLogger(name)
        logger.setLevel(logging.CRITICAL)
        logger.propagate = False
    for module in ("pydicom", "deid", "presidio_analyzer", "pylibjpeg", "gdcm"):
        warnings.filterwarnings("ignore", module=rf"{module}(\..*)?")
