"""The images capability."""
