"""The ``landscape`` command line."""
