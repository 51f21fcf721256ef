"""The one error type for bad input data: the CLI turns it into a one-line message and exit 2."""


class DataError(ValueError):
    """Input data is missing or malformed. The message names the file (and row) and what to do.

    Always one line: a message quoting a library's error (which may hold newlines, or bytes of the
    broken file) has its line breaks turned into spaces."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).splitlines()))
