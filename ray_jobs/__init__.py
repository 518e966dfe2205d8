"""Distributed execution on Ray (the only package besides the CLI that imports ray)."""
