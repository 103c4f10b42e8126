"""The one exception type users see: a clear message, a non-zero exit, no traceback."""


class JetDeployError(Exception):
    """A problem with the user's input or environment, with a message that names the file, key or op."""
