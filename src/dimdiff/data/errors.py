"""The one error type of `dimdiff.data`."""


class DataError(ValueError):
    """Bad dataset input: a missing path, an unreadable file, a wrong shape or value range.

    The message names what was expected and what was received.
    """
