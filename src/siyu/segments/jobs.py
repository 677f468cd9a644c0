"""Segment jobs (filled in by the segments work)."""
