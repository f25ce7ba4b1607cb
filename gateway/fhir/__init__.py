"""FHIR de-identification, linked to the DICOM path through one profile and one key.

Entry points
------------
* :func:`run_fhir_batch` (CLI): files already classified as FHIR (:func:`looks_like_fhir`) ->
  ``<output>/fhir/<Type>.ndjson`` + quarantine, returns a :class:`FhirBatchSummary`.
* :func:`deidentify_fhir` (HTTP service): one resource or Bundle in, the same form out; pure.

What joins with the DICOM (same key, any process, any day)
-----------------------------------------------------------
* ``Patient.identifier`` in a system declared in ``linkage.identity.namespaces[].fhir_systems``:
  value = ``linkage.person(ref).patient_id`` = the DICOM PatientID of the same person; the
  system is kept, or replaced by ``fhir.patient_identifier_system`` when the profile sets one.
* ``Patient.id`` = the same ``patient_id``; every reference to the patient follows.
* ImagingStudy ``urn:oid:`` identifiers, ``series.uid``, ``series.instance.uid``:
  ``pseudonymizer.uid(original)``; accession numbers (identifier type ACSN, ServiceRequest
  identifiers, ``basedOn.identifier``): ``pseudonymizer.accession(value)``.
* Every date of a resource that refers to a patient: that patient's ``date_offset_days`` (or the
  year only when ``linkage.dates.method`` is ``year-only``), exactly as the DICOM dates.

Patients are resolved through a :class:`PatientResolver`; the batch builds an in-memory index in
a first pass, a persistent identity index can implement the same protocol later.
"""

from gateway.fhir.batch import FhirBatchSummary, QuarantineRecord, looks_like_fhir, run_fhir_batch
from gateway.fhir.bundle import deidentify_fhir, deidentify_fhir_with_report
from gateway.fhir.resolver import ChainedResolver, InMemoryPatientIndex, PatientResolver

__all__ = [
    "ChainedResolver",
    "FhirBatchSummary",
    "InMemoryPatientIndex",
    "PatientResolver",
    "QuarantineRecord",
    "deidentify_fhir",
    "deidentify_fhir_with_report",
    "looks_like_fhir",
    "run_fhir_batch",
]
