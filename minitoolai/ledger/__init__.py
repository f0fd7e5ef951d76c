"""The credit ledger: holds before work, settlement after, top-ups, verification, sweeping."""
