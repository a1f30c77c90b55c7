"""Exit statuses of mxrc-systemd, and the error a user can fix from its message alone."""

EXIT_OK, EXIT_ERROR, EXIT_WARNINGS = 0, 1, 2


class UserError(Exception):
    """Bad input or the wrong place to run: printed as one line, exit 1, nothing written."""
