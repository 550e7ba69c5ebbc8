"""The config's one error, apart from the module that validates it so the schedule can raise it too."""


class ConfigError(ValueError):
    """A config that the pipeline refuses before any job runs."""
