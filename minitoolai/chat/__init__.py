"""The chat capability."""
