"""Accounts, API keys and authentication."""
