"""The one error type for bad input data: the CLI turns it into a one-line message and exit 2."""


class DataError(ValueError):
    """Input data is missing or malformed. The message names the file (and row) and what to do."""
