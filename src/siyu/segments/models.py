"""Segment and tag tables (filled in by the segments work)."""
