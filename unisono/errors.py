"""Errors a user can act on.

Raise :class:`UnisonoError` (or a subclass) with a one-line message that says what is wrong and how
to fix it. The CLI prints such errors as ``unisono: error: <message>`` and exits with status 2, never
with a traceback; every other exception is a bug and keeps its traceback.
"""


class UnisonoError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""


class MissingToolError(UnisonoError):
    """A system program or data file the toolkit needs is not installed."""

    def __init__(self, tool: str, apt_package: str, purpose: str = ""):
        why = f" (needed for {purpose})" if purpose else ""
        super().__init__(f"{tool} was not found{why}; install it with: apt-get install {apt_package}")
        self.tool = tool
        self.apt_package = apt_package
