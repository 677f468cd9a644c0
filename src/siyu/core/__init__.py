"""Infrastructure every capability shares; nothing business-specific lives here."""
