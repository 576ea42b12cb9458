"""The one exception the CLI turns into a one-line message and exit status 1.

Apart from the client and the commands because both raise it and `cli.main` catches it; any
other exception is a bug, printed with its type (CHORUS_DEBUG=1 shows the traceback).
"""


class CliError(Exception):
    """A failure the user can act on; printed as one line."""
