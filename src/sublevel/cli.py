"""The `sublevel` command: what Snakemake rules call, and what a user queries with.

Each subcommand lives in `sublevel.commands.<module>`; this module builds the parser from them and turns the
library's expected failures (a bad config, a missing or damaged file, nothing to compute from) into one line
and an exit status."""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import sys
import textwrap

from sublevel.commands import MODULES
from sublevel.errors import out_of_memory


def parser() -> argparse.ArgumentParser:
    """The user's commands are listed with their help; the job steps the workflow's rules run are registered
    with a description only, which keeps them out of that list, and named in the epilog."""
    from sublevel import __version__

    p = argparse.ArgumentParser(prog="sublevel", fromfile_prefix_chars="@",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Query and check the results of a sublevel project (run the pipeline "
                                            "with snakemake); every command has --help.")
    p.add_argument("--version", action="version", version=f"sublevel {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="<command>", title="commands")
    for module in MODULES:
        importlib.import_module(f"sublevel.commands.{module}").register(sub)
    listed = {a.dest for a in sub._choices_actions}
    p.epilog = textwrap.fill("job steps, which the workflow's rules run (each has --help): "
                             + ", ".join(n for n in sub.choices if n not in listed), break_on_hyphens=False)
    return p


def _stop(signum, frame) -> None:
    from sublevel import storage

    storage.exit_removing_temporaries(128 + signum, after=10.0)
    sys.exit(128 + signum)


def _refusal(e: Exception) -> str | None:
    """The line of a DuckDB error raised by a damaged table's view (sublevel.catalog), or None. Matched by
    module, not imported: the jobs that train run where DuckDB may not be installed."""
    text = str(e)
    if type(e).__module__.lstrip("_").split(".")[0] == "duckdb" and "refused: " in text:
        return text[text.index("refused: "):]
    return None


def _resource_exhausted(e: Exception) -> str | None:
    """One line for a job that ran out of disk or memory (its outputs are left unwritten: a rerun with room
    completes), or None."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"out of disk space ({e.strerror}{f': {e.filename}' if e.filename else ''}); nothing was written"
    if out_of_memory(e):
        return f"out of memory ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "results", None):  # the results commands' --results: every path then lies under it
        from sublevel import paths

        try:
            paths.use_results(args.results)
        except ValueError as e:
            print(f"sublevel {args.command}: --results {e}", file=sys.stderr)
            return 2
    from sublevel.commands.base import write_skipped
    from sublevel.errors import ConfigError, DataError
    from sublevel.storage import CorruptFile, Skipped

    # SIGTERM (scancel, snakemake stopping jobs) unwinds like Ctrl-C, so half-written outputs are removed; within
    # 10 s, well inside SLURM's default 30 s before SIGKILL, even if the exception never reaches the top
    signal.signal(signal.SIGTERM, _stop)
    try:
        args.func(args)
    except Skipped as e:
        if not getattr(args, "outputs", None):
            print(f"sublevel {args.command}: {e}", file=sys.stderr)
            return 2
        write_skipped(args, str(e))
        print(f"sublevel {args.command}: skipped, its outputs written empty: {e}", file=sys.stderr)
    except (ConfigError, DataError, FileNotFoundError, CorruptFile) as e:
        print(f"sublevel {args.command}: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader stopped reading (`| head`): exit as a tool killed by SIGPIPE does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 128 + signal.SIGPIPE
    except Exception as e:
        if line := _refusal(e) or _resource_exhausted(e):
            print(f"sublevel {args.command}: {line}", file=sys.stderr)
            return 1
        raise
    return 0
