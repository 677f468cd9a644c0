"""Orders, lines and refunds from every channel, and the per-member metrics they drive."""
