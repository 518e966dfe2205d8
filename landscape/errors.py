"""One base class for every error the project raises on bad input, so the CLI catches one class.

Each error keeps the builtin it always was (ValueError for bad values, RuntimeError for missing
files or models) as a second base, so code that catches those still works.
"""


class LandscapeError(Exception):
    """A clear, one-line problem with the user's input (config, data, checkpoint, model, task)."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none): for one-line errors that
    wrap another library's multi-line message."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
