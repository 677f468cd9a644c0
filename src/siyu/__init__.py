"""siyu (私域): member operations for retail brands."""

__version__ = "0.1.0"
