"""The error raised for bad data or data flags."""

from ..errors import UsageError


class DataError(UsageError):
    """
    Bad input data or a data flag that cannot work: the message names the file, split, column or flag, and the fix.

    A `UsageError` (so entry points print it as one line, exit 2) and hence a `ValueError`.
    """
