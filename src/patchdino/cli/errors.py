"""The one exception type the command line turns into a one-line error and exit code 2."""


class UsageError(Exception):
    """Bad input the user can fix (a missing file, an impossible option); printed, no traceback."""
