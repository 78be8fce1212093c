"""The one error type EDSelect raises for bad input; the CLI prints its message."""

from __future__ import annotations


class EDSelectError(ValueError):
    """Bad EDSelect input (data file, model or metrics); the message names the problem."""
