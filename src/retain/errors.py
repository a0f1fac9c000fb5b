"""The one exception type for bad input: the command line prints its message on one line."""


class RetainError(ValueError):
    """A problem with the user's input or saved state; the message names it and the fix."""
