"""The organisation: regions, stores and staff (guides and managers)."""
