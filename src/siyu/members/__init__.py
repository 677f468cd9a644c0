"""Members and one identity (OneID) across channels."""
