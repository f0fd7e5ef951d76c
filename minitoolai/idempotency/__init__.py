"""Idempotency keys on the billed POSTs: a retry returns the first result, never a second charge."""
