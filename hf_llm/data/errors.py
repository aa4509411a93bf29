"""The error raised for bad data or data flags."""


class DataError(ValueError):
    """
    Bad input data or a data flag that cannot work: the message names the file, split, column or flag, and the fix.

    Scripts catch it and print the message alone (`raise SystemExit(f"error: {e}")`), since a traceback adds nothing
    to it; anything else is a bug and keeps its traceback. Subclasses `ValueError`, so `except ValueError` works.
    """
