"""Service configuration: a YAML file plus environment overrides, validated once at start-up.

No configuration is read at import time. Secrets (pseudonymisation keys, store credentials) come
from the environment or files named here, never from this file's values in the repository.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.errors import ConfigurationError, ReasonCode


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StoreConfig(Strict):
    type: Literal["folder", "dicomweb", "fhir", "dimse"] = "folder"  # dimse: C-STORE
    path: Path | None = Field(
        default=None, description="folder store root (default DIR/store/<dest>)"
    )
    url: str | None = Field(
        default=None,
        description="DICOMweb root or FHIR base URL; dimse: dimse://CALLED_AE@host:port",
    )
    token_env: str | None = Field(default=None, description="env var holding a bearer token")
    timeout_seconds: float = 30.0


class ReturnsConfig(Strict):
    """Results a research partner returns (issue 15): mapped back to the original patient and
    study through the broker vault and forwarded to the clinic's own stores."""

    uid_root: str = Field(
        pattern=r"^[0-2](\.(0|[1-9][0-9]*))+$",
        max_length=40,
        description="the hospital's UID root: returned objects get new UIDs under it",
    )
    dicom_store: StoreConfig | None = Field(
        default=None, description="the clinical PACS (type dicomweb) returned DICOM goes to"
    )
    fhir_store: StoreConfig | None = Field(
        default=None, description="the clinical FHIR server (type fhir) returned FHIR goes to"
    )
    series_description_prefix: str = Field(
        default="RESEARCH RESULT: ",
        max_length=32,
        description="prepended to a returned object's SeriesDescription (marks it as research)",
    )
    tag_system: str = "urn:deid-gateway:research-result"
    tag_code: str = "research-result"


class DestinationConfig(Strict):
    profile: str = "research"
    store: StoreConfig = Field(default_factory=StoreConfig)
    fhir_store: StoreConfig | None = Field(
        default=None, description="where FHIR goes when the DICOM store is not a FHIR server"
    )
    patient_source: StoreConfig | None = Field(
        default=None,
        description="hospital FHIR server asked for a Patient the index does not know yet",
    )
    calling_ae_titles: list[str] | None = Field(
        default=None,
        description="C-STORE: the calling AE titles allowed to send to this destination; "
        "others are rejected (A-ASSOCIATE-RJ: calling AE title not recognised). Unset: any",
    )
    require_signoff: bool | None = Field(
        default=None,
        description="the service refuses to start (fail closed) while this destination's "
        "effective profile hash has no sign-off in the database (`deid-gateway profile "
        "signoff`): a privacy officer's decision is explicit, and a profile changed after its "
        "sign-off is signed again. Unset: required for every destination except 'default' "
        "(the embedded default, which runs a shipped profile out of the box)",
    )
    vault: bool = Field(
        default=True,
        description="record every pseudonym issued for this destination -> its original in "
        "the broker vault (encrypted with the broker key) so the honest broker can re-identify "
        "and results can be returned; false: nothing of this destination can be re-identified",
    )
    returns: ReturnsConfig | None = Field(
        default=None,
        description="where results returned by the partner go (clinical PACS / FHIR); "
        "unset: the return doors refuse",
    )


class DimseConfig(Strict):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 11112
    ae_title: str = "DEIDGW"
    destination: str = "default"


class Limits(Strict):
    max_request_bytes: int = 512 * 1024 * 1024
    max_fhir_bytes: int = 64 * 1024 * 1024
    max_backlog: int | None = Field(
        default=20000,
        ge=1,
        description="back-pressure: intake answers 503 (C-STORE 0xA700) while this many items "
        "wait or are in progress; null: no limit",
    )
    min_free_spool_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=0,
        description="back-pressure: intake answers 503 (C-STORE 0xA700) while the spool's "
        "volume has less free space than this",
    )


class RetryPolicy(Strict):
    first_delay_seconds: float = 1.0
    max_delay_seconds: float = 300.0
    lease_seconds: float = 300.0


class IdentitySettings(Strict):
    pending_seconds: float = Field(
        default=86400.0, description="how long a resource waits for its Patient before quarantine"
    )


class QueueConfig(Strict):
    """The scale-out engine: Celery on RabbitMQ. Set, ``serve`` only receives and enqueues;
    ``deid-gateway worker`` processes (on any host that mounts the data folder)."""

    broker_url: str = Field(description="amqp://user:password@host:5672/vhost (RabbitMQ)")
    queue_name: str = "deid-gateway"
    batch_size: int = Field(
        default=32,
        ge=1,
        le=500,
        description="item ids per message: one claim, one commit (a request's ids stay "
        "together unless they are more)",
    )
    prefetch: int = Field(
        default=1,
        ge=1,
        le=64,
        description="messages each worker process holds, the one it runs included: more "
        "hides the broker's round trip between tasks (about a millisecond), fewer spreads a "
        "short backlog more evenly (at the end of a run, no worker sits on messages while "
        "another is idle)",
    )
    linger_seconds: float = Field(
        default=0.05,
        ge=0,
        le=1.0,
        description="the intake waits this long for more ids before it publishes a message "
        "with fewer than batch_size: under load fuller messages, at most this much later",
    )
    publish_timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        description="a publish that cannot reach the broker gives up after this; the "
        "housekeeper publishes the item again once the broker is back",
    )


# -- sources: where a cohort export pulls from (gateway/intake/pull) ----------------------------
#: FHIR resource types searched per patient when the EHR has no Patient/$everything, with the
#: search parameter naming the patient (FHIR R4 compartment definitions)
DEFAULT_PULL_RESOURCE_TYPES: dict[str, str] = {
    "Encounter": "patient",
    "Condition": "patient",
    "Observation": "patient",
    "DiagnosticReport": "patient",
    "ImagingStudy": "patient",
    "ServiceRequest": "patient",
    "Procedure": "patient",
    "MedicationRequest": "patient",
    "MedicationStatement": "patient",
    "AllergyIntolerance": "patient",
    "Immunization": "patient",
    "DocumentReference": "patient",
    "CarePlan": "patient",
}


class PullLimits(Strict):
    """So the hospital's systems are not overloaded by an export."""

    max_concurrent: int = Field(
        default=2, ge=1, le=32, description="cohort entries fetched at once"
    )
    requests_per_second: float = Field(
        default=10.0, gt=0, description="requests (HTTP) or associations (DIMSE) per second"
    )
    timeout_seconds: float = Field(default=60.0, gt=0)


class DicomwebSourceConfig(PullLimits):
    type: Literal["dicomweb"]
    url: str = Field(description="DICOMweb root: QIDO-RS and WADO-RS below it")
    token_env: str | None = Field(default=None, description="env var holding a bearer token")


class DimseSourceConfig(PullLimits):
    type: Literal["dimse"]
    host: str
    port: int = Field(ge=1, le=65535)
    called_ae: str = Field(description="the PACS's AE title")
    calling_ae: str = Field(default="DEIDGW", description="the gateway's AE title as SCU")
    move_destination_ae: str | None = Field(
        default=None,
        description="set: C-MOVE to this AE title, the gateway's own C-STORE listener "
        "(dimse.host/port; the PACS must know it); unset: C-GET on the query association",
    )


class FhirSourceConfig(PullLimits):
    type: Literal["fhir"]
    url: str = Field(description="the EHR's FHIR base URL")
    token_env: str | None = Field(default=None, description="env var holding a bearer token")
    resource_types: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_PULL_RESOURCE_TYPES),
        description="type -> patient search parameter, searched when the server has no "
        "Patient/$everything",
    )


class SourcesConfig(Strict):
    pacs: DicomwebSourceConfig | DimseSourceConfig | None = Field(
        default=None, discriminator="type"
    )
    ehr: FhirSourceConfig | None = None


class ServiceConfig(Strict):
    data_dir: Path = Path("deid-data")
    database_url: str | None = None
    key_file: Path | None = None
    broker_key_file: Path | None = Field(
        default=None,
        description="the honest broker's vault key (AES-256-GCM), kept apart from the "
        "pseudonymisation key; $DEID_GATEWAY_BROKER_KEY wins over it",
    )
    destinations: dict[str, DestinationConfig] = Field(
        default_factory=lambda: {"default": DestinationConfig()}
    )
    dimse: DimseConfig = Field(default_factory=DimseConfig)
    limits: Limits = Field(default_factory=Limits)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    public_url: str | None = Field(
        default=None,
        description="the gateway's URL as senders reach it (https://host[:port]); STOW-RS "
        "RetrieveURL is built from it, never from the request's Host header",
    )
    workers: int = Field(default=1, ge=0, description="in-process worker threads (0: none)")
    sources: SourcesConfig = Field(
        default_factory=lambda: SourcesConfig(),
        description="the PACS and the EHR a cohort export pulls from (deid-gateway export)",
    )
    queue: QueueConfig | None = Field(
        default=None,
        description="Celery on RabbitMQ: serve enqueues, `deid-gateway worker` processes; "
        "unset (the embedded default): in-process workers",
    )
    housekeeping_seconds: float = Field(
        default=5.0,
        gt=0,
        description="how often due retries, expired leases and unpublished items are "
        "handed to the workers (the only timer: new work is delivered, never polled for)",
    )
    poll_seconds: float = Field(
        default=0.2, description="kept for old configurations; workers no longer poll"
    )

    @model_validator(mode="after")
    def _default_destination(self) -> ServiceConfig:
        if "default" not in self.destinations:
            raise ValueError("a destination named 'default' is required")
        return self

    def requires_signoff(self, destination: str) -> bool:
        """The destination's explicit ``require_signoff``, else True except for 'default'."""
        explicit = self.destinations[destination].require_signoff
        return explicit if explicit is not None else destination != "default"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'gateway.db').resolve()}"

    def store_root(self, destination: str) -> Path:
        store = self.destinations[destination].store
        return store.path or self.data_dir / "store" / destination


def load_config(path: Path | None = None, **overrides: Any) -> ServiceConfig:
    """File (optional) < environment (DEID_GATEWAY_DATA_DIR, DEID_GATEWAY_DATABASE_URL) < args."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigurationError(
                ReasonCode.CONFIGURATION_INVALID, f"cannot read config {path}"
            ) from exc
    env = {
        "data_dir": os.environ.get("DEID_GATEWAY_DATA_DIR"),
        "database_url": os.environ.get("DEID_GATEWAY_DATABASE_URL"),
    }
    data.update({k: v for k, v in env.items() if v})
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return ServiceConfig.model_validate(data)
    except Exception as exc:
        raise ConfigurationError(
            ReasonCode.CONFIGURATION_INVALID, f"invalid service configuration: {exc}"
        ) from exc
