"""The honest broker: the re-identification vault (pseudonym -> original, encrypted with a
key of its own), audited look-ups, and the way back for results returned by a partner."""
