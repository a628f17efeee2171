"""Bring your own problem: models, data and loops written as a user would (importable as ``examples.*``)."""
