"""The `sublevel` subcommands: one module per workflow stage (mirroring workflow/rules/<stage>.smk), one for
the user's commands over results/, one for the config (the benchmarks are a script of the checkout,
bench/run.py). Each module's `register(sub)` adds its parsers, each parser's `func` parses nothing more and
hands the work to the library."""

MODULES = ("data", "train", "imp", "subspace", "analysis", "results", "project")
