"""deid-gateway: linked DICOM + FHIR de-identification for research sharing."""

__version__ = "0.1.0"
