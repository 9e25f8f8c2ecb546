"""The one error of bad input, raised by every reader and caught by every command."""


class InputError(ValueError):
    """Bad input (a missing, malformed or cut-short file, an unknown option): the message names the
    file or option at fault, the line where there is one, and the fix, and never quotes a note."""
