"""The dashboard capability."""
