"""Errors of a build. Every failure of `adafv engine` is a BuildError (or a subclass naming the step): one line of
cause, exit code 2 from the CLI, and nothing half-written left behind."""

from adafv.errors import AdafvError


class BuildError(AdafvError):
    """A bundle could not be built (the message says which step and why)."""
