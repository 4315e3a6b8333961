"""The one exception type the CLI turns into a one-line message (leaf module)."""


class DalleEvalError(ValueError):
    """Bad input or a broken artifact, explained in one line that names the file/option/row."""
