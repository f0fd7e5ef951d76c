"""The speech capability."""
