"""Inversion tasks built on the landscape core."""
