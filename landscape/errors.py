"""One base class for every error the project raises on bad input, so the CLI catches one class.

Each error keeps the builtin it always was (ValueError for bad values, RuntimeError for missing
files or models) as a second base, so code that catches those still works.
"""


class LandscapeError(Exception):
    """A clear, one-line problem with the user's input (config, data, checkpoint, model, task)."""
