"""The pipeline: stages in one direction (intake -> runner -> stages -> verify -> store /
quarantine). A stage raises a DeidError; only the runner turns errors into outcomes."""
