"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """A problem with the user's input or environment, reported without a traceback."""


class EndpointError(UserError):
    """The model endpoint failed past the retry budget or answered with a permanent error."""


class StorageError(UserError):
    """A file could not be written or read: disk full, file-size limit, I/O error, read-only file system."""

    def __init__(self, path, exc: OSError, doing: str = "write", then: str = "run the same command again"):
        cause = exc.strerror or str(exc)
        super().__init__(
            f"{path}: cannot {doing} ({cause}) — free space or fix the file system, then {then}; "
            "records written so far are kept"
        )


def first_error(exc) -> tuple[str, str]:
    """(dotted field, message) of the first problem a pydantic ValidationError reports."""
    err = exc.errors()[0]
    return ".".join(str(p) for p in err["loc"]), err["msg"].removeprefix("Value error, ")
