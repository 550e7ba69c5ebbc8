"""The expected failures that end a command in one line, apart from the modules that raise them: the schedule
raises ConfigError as the config does, and catching DataError imports no torch (the results commands never do);
nor does telling an allocation that failed (out_of_memory)."""


class ConfigError(ValueError):
    """A config that the pipeline refuses before any job runs."""


class DataError(RuntimeError):
    """A dataset that cannot be prepared here, with what to do about it."""


def out_of_memory(e: BaseException) -> bool:
    """Whether `e` is an allocation that failed: Python's MemoryError, torch's OutOfMemoryError (CUDA's; told
    by name, so that no torch is imported), or the RuntimeError that PyTorch's CPU allocator raises (it has no
    type of its own)."""
    return (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"
            or (isinstance(e, RuntimeError) and "DefaultCPUAllocator: can't allocate memory" in str(e)))
