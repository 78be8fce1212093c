"""The one error type EDSelect raises for bad input; the CLI prints its message."""

from __future__ import annotations

from sglang_edsd.errors import EDSDError


class EDSelectError(EDSDError):
    """Bad EDSelect input (data file, model or metrics); the message names the problem."""
