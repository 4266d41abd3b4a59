"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """A problem with the user's input or environment, reported without a traceback."""


class EndpointError(UserError):
    """The model endpoint failed past the retry budget or answered with a permanent error."""
