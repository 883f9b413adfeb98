"""Analysis's user-facing error type (kept apart so the command line can name it without pandas)."""


class AnalysisError(ValueError):
    """A request analysis cannot serve (a bad option value); one line naming the fix."""
