"""Insight jobs (filled in by the insight work)."""
