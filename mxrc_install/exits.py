"""Exit statuses of mxrc-systemd, and the error a user can fix from its message alone."""

EXIT_OK, EXIT_ERROR, EXIT_WARNINGS = 0, 1, 2


class UserError(Exception):
    """Bad input or the wrong place to run: printed as one line, exit 1, nothing written.

    `path`, when given, is the file the message is about (the "path" of a --json error)."""

    def __init__(self, message: str, path=None):
        super().__init__(message)
        self.path = None if path is None else str(path)
