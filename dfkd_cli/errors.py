"""The one exception type for problems the user can fix (bad config, missing file)."""


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit code 2, nothing trained."""
