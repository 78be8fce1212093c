"""The one base class of the errors a user can fix (bad input, data, configuration).

Why one: `sglang-edsd` catches exactly this class once (`cli.main`), prints `error: <message>`
and exits 2; anything else is a bug and keeps its traceback. Each module's own subclass names
the problem area (`DataError`, `CaptureError`, ...). It stays a `ValueError` for callers that
catch that.
"""


class EDSDError(ValueError):
    """Bad user input; the message names the file, field or value and what was expected."""
