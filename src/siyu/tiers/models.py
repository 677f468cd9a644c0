"""Growth value (成长值) ledger and tier history."""
