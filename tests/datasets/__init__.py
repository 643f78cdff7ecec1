"""Tests of the datasets app: ingestion, the demo, the requester admin, models and geometry."""
