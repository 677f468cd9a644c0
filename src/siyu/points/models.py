"""Points (积分) ledger and lots."""
