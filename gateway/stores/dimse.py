"""A DICOM store reached by C-STORE (PS3.4 B, PS3.7 9.1.1): the clinical PACS of the way back.

``url`` is ``dimse://CALLED_AE@host:port``. One association per instance, so a failure is the
failure of that instance alone (results come back a few at a time, not by the study). What can
be retried (the PACS is unreachable, rejects or aborts the association, or answers "Out of
Resources" 0xA7xx) raises :class:`StoreUnavailable`; another failure status raises
:class:`StoreRejected`. Messages carry status codes only, never an element value.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from gateway.config import StoreConfig
from gateway.errors import ConfigurationError, ReasonCode
from gateway.stores.base import StoreRejected, StoreUnavailable
from gateway.stores.dicomweb import reference

log = logging.getLogger(__name__)

_URL = re.compile(r"^dimse://([^@/:]{1,16})@([^:/]+):(\d{1,5})/?$")
OUT_OF_RESOURCES = range(0xA700, 0xA800)
SUCCESS_OR_WARNING = frozenset({0x0000, 0x0001, 0x0107, 0x0116, 0xB000, 0xB006, 0xB007})
DEFAULT_CALLING_AE = "DEIDGW"


@dataclass(frozen=True)
class DimseAddress:
    called_ae: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str | None) -> DimseAddress:
        match = _URL.match(url or "")
        if match is None:
            raise ConfigurationError(
                ReasonCode.CONFIGURATION_INVALID,
                "a dimse store's url must be dimse://CALLED_AE@host:port",
            )
        return cls(match.group(1), match.group(2), int(match.group(3)))


class DimseStore:
    """C-STORE SCU for one remote AE."""

    def __init__(
        self,
        address: DimseAddress,
        *,
        calling_ae: str = DEFAULT_CALLING_AE,
        timeout_seconds: float = 30.0,
        name: str = "dimse",
    ) -> None:
        self.address = address
        self.calling_ae = calling_ae
        self.timeout_seconds = timeout_seconds
        self.name = name

    @classmethod
    def from_config(
        cls, config: StoreConfig, name: str = "dimse", calling_ae: str = DEFAULT_CALLING_AE
    ) -> DimseStore:
        return cls(
            DimseAddress.parse(config.url),
            calling_ae=calling_ae,
            timeout_seconds=config.timeout_seconds,
            name=name,
        )

    def put_dicom(self, ds: Dataset) -> str:
        from pynetdicom import AE

        ref = reference(ds)
        meta = getattr(ds, "file_meta", None)
        syntax = str(getattr(meta, "TransferSyntaxUID", "") or "1.2.840.10008.1.2.1")
        ae = AE(ae_title=self.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_seconds
        ae.add_requested_context(str(ds.SOPClassUID), [syntax])
        assoc = ae.associate(self.address.host, self.address.port, ae_title=self.address.called_ae)
        if not assoc.is_established:
            log.warning("dimse store %s: association not established", self.name)
            raise StoreUnavailable("the C-STORE SCP refused or did not answer the association")
        try:
            status = assoc.send_c_store(ds)
        finally:
            assoc.release()
        code = int(getattr(status, "Status", -1)) if status else -1
        if code in SUCCESS_OR_WARNING:
            return ref
        if code == -1 or code in OUT_OF_RESOURCES:
            raise StoreUnavailable(f"the C-STORE SCP answered status {code:#06x}")
        raise StoreRejected(f"the C-STORE SCP refused the instance (status {code:#06x})")

    def put_fhir(self, resources: list[dict[str, Any]]) -> list[str]:
        raise StoreRejected("a C-STORE SCP holds no FHIR")
