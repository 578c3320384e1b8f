"""The project's user-facing errors: a mistake in what a user gave, reported by the tools in one line.

Raise a subclass of `UserError` (or an OSError such as FileNotFoundError or PermissionError about a
path the user named) with a message naming what was wrong, what was expected and what to do;
`cli.run` prints it as `error: ...` and exits 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import dataclasses


class UserError(Exception):
    """A mistake in the user's input (flags, files, data, workdir), not a bug."""


@dataclasses.dataclass(frozen=True)
class BadFile:
    """A file of a dataset's source that is missing, unreadable or inconsistent, and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class BadFileError(UserError):
    """Files of a dataset's source that cannot be used; `.bad` names each and says why (the first
    `shown` in the message, then how many more)."""

    def __init__(self, *bad: BadFile, hint: str = "", shown: int = 50):
        lines = [str(b) for b in bad[:shown]]
        if len(bad) > shown:
            lines.append(f"... and {len(bad) - shown} more ({len(bad)} in all)")
        super().__init__("\n".join(lines + ([hint] if hint else [])))
        self.bad = bad
