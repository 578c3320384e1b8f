"""The project's user-facing errors: a mistake in what a user gave, reported by the tools in one line.

Raise a subclass of `UserError` (or an OSError such as FileNotFoundError or PermissionError about a
path the user named) with a message naming what was wrong, what was expected and what to do;
`cli.run` prints it as `error: ...` and exits 2. Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input (flags, files, data, workdir), not a bug."""
