"""Segments (人群) and tags (标签): condition trees compiled to one query."""
