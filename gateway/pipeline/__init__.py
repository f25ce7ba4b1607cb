"""The pipeline: stages in one direction (intake -> de-identify -> verify -> forward).

A stage raises QuarantineError / DropError; only the runner turns those into records.
"""
