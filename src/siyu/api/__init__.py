"""The HTTP API: app assembly, authentication, and the one place errors become responses."""
