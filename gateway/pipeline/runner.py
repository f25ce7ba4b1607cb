"""The one runner: every intake (directory, STOW-RS, FHIR REST, C-STORE) hands it payloads,
and it alone runs the stages and decides the outcome.

    payload -> stages of its kind -> verify -> research store  => Outcome

DICOM: read -> patient (identity) -> DicomProcessor (policy, pixels, header, markers,
verification) -> store. FHIR: parse -> learn the Patients it carries -> resolve the patients it
references (pending if unknown) -> FhirProcessor (de-identify, validate, provenance) -> store.
Every exception becomes an outcome through :func:`gateway.errors.classify_exception`, in one
place: a runner never raises for bad data, and what it cannot make safe is never forwarded.
The runner writes nothing but the research store; the caller keeps the outcome (a quarantine,
an item row, a summary line).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from gateway.dicom.identifiers import patient_identity
from gateway.dicom.reader import read_dicom
from gateway.errors import (
    DeidError,
    DropError,
    DuplicateInstance,
    PatientPending,
    QuarantineError,
    ReasonCode,
    StoreUnavailable,
    classify_exception,
)
from gateway.linkage.issued import collecting
from gateway.pipeline.destinations import Destination
from gateway.pipeline.outcome import Outcome, Status
from gateway.pipeline.patients import PatientDirectory
from gateway.pipeline.payload import Payload, PayloadKind

if TYPE_CHECKING:
    from gateway.pipeline.dicom_stages import ProcessedInstance
    from gateway.pipeline.fhir_stages import ProcessedFhir


@dataclass(frozen=True)
class _Done:
    """What the stages of one payload hand the store step."""

    refs: tuple[str, ...]
    resources: int
    text_counts: tuple[tuple[str, int], ...]
    learned: tuple[str, ...] = ()
    undeclared: tuple[str, ...] = ()


#: Errors by class -> the status of the outcome; the first class that matches wins.
_STATUS_OF_ERROR: tuple[tuple[type[DeidError], Status], ...] = (
    (DropError, Status.DROPPED),
    (PatientPending, Status.PENDING),
    (StoreUnavailable, Status.RETRY),
    (DuplicateInstance, Status.DUPLICATE),
)


def outcome_of_error(error: BaseException) -> Outcome:
    """The outcome of a payload whose stages raised ``error``: the one mapping."""
    typed = classify_exception(error)
    status = next((s for cls, s in _STATUS_OF_ERROR if isinstance(typed, cls)), Status.QUARANTINED)
    pending = typed if isinstance(typed, PatientPending) else None
    issues = getattr(typed, "outcome", None)
    return Outcome(
        status,
        typed.reason,
        typed.detail,
        typed.stage,
        waiting_for=pending.id_hash if pending else None,
        learned=pending.learned if pending else (),
        issues=issues if isinstance(issues, dict) else {},
    )


class ResultStages(Protocol):
    """The way back (``gateway.broker.returns``): a result mapped to the original patient and
    study through the vault and stored at the clinic; raises like any stage."""

    def map_back(self, payload: Payload) -> list[str]: ...


class Runner:
    """Runs payloads for one destination. Built once per worker (processors, stores and the
    patient directory are long-lived); thread-compatible like its processors."""

    def __init__(
        self,
        destination: Destination,
        patients: PatientDirectory,
        on_processed: Callable[[ProcessedInstance], None] | None = None,
        results: ResultStages | None = None,
    ) -> None:
        """``on_processed`` sees each de-identified instance before the store step, whatever
        the store: the workbench's preview (with a store that keeps nothing) reads the pixel
        stage's report there. ``results``: the stages of returned results, for a destination
        that takes them back (else such a payload is quarantined)."""
        self.destination = destination
        self.patients = patients
        self.on_processed = on_processed
        self.results = results
        self._stages: dict[PayloadKind, Callable[[Payload], _Done]] = {
            PayloadKind.DICOM: self._dicom,
            PayloadKind.FHIR: self._fhir,
            PayloadKind.DICOM_RESULT: self._result,
            PayloadKind.FHIR_RESULT: self._result,
        }

    def run(self, payload: Payload) -> Outcome:
        """The outcome carries what was issued (for the vault) when it was delivered, or had
        been delivered before (a duplicate): nothing else can ever come back to be mapped."""
        with collecting(self.destination.vault) as issued:
            try:
                done = self._stages[payload.kind](payload)
            except Exception as error:  # noqa: BLE001 - every failure is an outcome
                outcome = outcome_of_error(error)
                if outcome.status is Status.DUPLICATE:
                    return replace(outcome, issued=issued.entries())
                return outcome
        return Outcome(
            Status.FORWARDED,
            refs=done.refs,
            resources=done.resources,
            text_counts=done.text_counts,
            learned=done.learned,
            undeclared=done.undeclared,
            issued=issued.entries(),
        )

    # -- DICOM ---------------------------------------------------------------------------------
    def _dicom(self, payload: Payload) -> _Done:
        if payload.path is None:
            raise QuarantineError(
                ReasonCode.UNSUPPORTED_INPUT, "DICOM must be a file", stage="intake"
            )
        ds = read_dicom(payload.path)
        identifier, issuer, kind = patient_identity(ds)
        person_key = (
            self.patients.dicom_person_key(identifier, issuer) if kind == "patient" else None
        )
        done = self.destination.dicom.process(ds, person_key)
        if self.on_processed is not None:
            self.on_processed(done)
        ref = self.destination.dicom_store.put_dicom(done.dataset)
        counts = tuple(sorted(done.result.text_counts.items()))
        identity = self.destination.linkage.identity
        undeclared = identity.undeclared_issuer(issuer) if kind == "patient" else None
        return _Done((str(ref),), 1, counts, undeclared=(undeclared,) if undeclared else ())

    # -- results returned by a partner ---------------------------------------------------------
    def _result(self, payload: Payload) -> _Done:
        if self.results is None:
            raise QuarantineError(
                ReasonCode.CONFIGURATION_INVALID,
                "the destination takes no returned results",
                stage="return",
            )
        refs = self.results.map_back(payload)
        return _Done(tuple(refs), len(refs), ())

    # -- FHIR ----------------------------------------------------------------------------------
    def _fhir(self, payload: Payload) -> _Done:
        from gateway.pipeline.fhir_stages import patients_in  # the FHIR stages load on first use

        fhir = self.destination.fhir
        obj = fhir.parse(payload.read_bytes())
        patients = patients_in(obj)
        learned = self.patients.learn(patients)
        identity = self.destination.linkage.identity
        undeclared = tuple(sorted({s for p in patients for s in identity.undeclared_systems(p)}))
        missing = self.patients.unresolved(obj)
        if missing and self.patients.fetch_missing(missing):
            missing = self.patients.unresolved(obj)
        if missing:
            raise PatientPending(missing[0].id_hash, learned=learned)
        processed: ProcessedFhir = fhir.process(obj, self.patients.resolver)
        resources = list(processed.resources)
        if fhir.wants_provenance:
            patient_ids = [
                str(r.get("id")) for r in resources if r.get("resourceType") == "Patient"
            ]
            if patient_ids:
                resources.append(fhir.provenance(patient_ids))
        refs = self.destination.fhir_store.put_fhir(resources)
        spans = tuple(sorted(processed.spans.items()))
        return _Done(tuple(refs), len(resources), spans, learned, undeclared)
