"""Dialects of other agent networks, translated onto the same hub services (DESIGN §6)."""
