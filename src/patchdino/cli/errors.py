"""The command line's own error type (the library's is :class:`~patchdino.errors.InputError`)."""


class UsageError(Exception):
    """Bad input the user can fix (a missing file, an impossible option).

    Printed as a one-line error with exit code 2, without a traceback (see
    :mod:`patchdino.cli.main`).
    """
