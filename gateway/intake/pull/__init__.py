"""Cohort export by pull: an approved list of patients or studies is found and fetched from
the PACS (DICOMweb or DIMSE) and the EHR (FHIR), and every fetched study and resource enters
the gateway through :meth:`gateway.pipeline.jobs.JobService.accept`, exactly as pushed data
does: same pipeline, same destination, same pseudonyms, so the result is linked."""
