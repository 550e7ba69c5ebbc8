"""The expected failures that end a command in one line, apart from the modules that raise them: the schedule
raises ConfigError as the config does, and catching DataError imports no torch (the results commands never do)."""


class ConfigError(ValueError):
    """A config that the pipeline refuses before any job runs."""


class DataError(RuntimeError):
    """A dataset that cannot be prepared here, with what to do about it."""
