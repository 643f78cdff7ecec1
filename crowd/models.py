"""Crowd models (stages, HITs, assignments, workers, payments) arrive with the crowd issue."""
