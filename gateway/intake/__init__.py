"""Intake: the protocols data arrives by (HTTP: DICOMweb, FHIR REST; DIMSE C-STORE)."""
