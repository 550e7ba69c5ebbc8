"""The user's commands over results/: SQL, the summary, the jobs' times, the views, the integrity check."""

from __future__ import annotations

import os
import sys

from sublevel.commands.base import plain_tables, results_parent, say_damage

SUMMARY_TITLES = {"dense": "Dense networks", "threshold": "Threshold training dimension d*(eps) (P(d) >= 1/2)",
                  "theory": "d*(eps) measured beside the quadratic-well prediction (Larsen et al. 2022; view dstar_predicted)",
                  "prune_fraction": "How much one IMP level can prune: the largest fraction still linearly connected "
                                    "(Paul et al. 2023; view prune_fraction)",
                  "tickets": "Lottery tickets: highest sparsity within 1 point of dense test accuracy",
                  "skipped": "Skipped jobs (nothing to compute from; their outputs hold no rows)"}



def query(args) -> None:
    import duckdb

    from sublevel import catalog

    con, found = catalog.open_catalog(args.root)  # locked down before it sees any of the user's SQL
    say_damage(found)
    try:
        df = catalog.query(args.sql, con=con)
    except catalog.QueryRefused as e:
        sys.exit(f"sublevel query: {e}")
    except duckdb.Error as e:  # a damaged table's view refuses in its own words, without DuckDB's prefix
        sys.exit(f"sublevel query: {str(e).removeprefix('Invalid Input Error: ')}")
    if args.format == "csv":
        if nested := [c for c, t in df.schema.items() if t.is_nested()]:
            sys.exit(f"sublevel query: --format csv cannot hold the list columns {nested}: use --format json, "
                     "or select them as text (array_to_string(col, ';'))")
        sys.stdout.write(df.write_csv())
    elif args.format == "json":
        sys.stdout.write(df.write_json() + "\n")
    else:
        with plain_tables():
            print(df)


def jobs(args) -> None:
    from sublevel import catalog, paths

    con, found = catalog.open_catalog(args.root)
    say_damage(found)
    total = con.sql(catalog.JOBS_TOTAL).pl()
    if not total["jobs"].item():
        print(f"no finished jobs recorded in {found.root / paths.SNAKEMAKE_METADATA}")
        return
    with plain_tables():
        print(f"{total}\n{con.sql(catalog.JOBS_BY_STAGE).pl()}")
    print(f"The jobs behind the outputs now under {paths.results()}/ (each output's last job, of whichever run "
          "wrote it); span_s runs from the first start to the last end, and so spans every run among them.")
    if untimed := total["untimed"].item():
        print(f"{untimed} jobs ran under a cluster executor, which records when a job wrote its outputs but not when"
              " it started: their time is the cluster's accounting (sacct), not here")


def summary(args) -> None:
    from sublevel import catalog

    con, found = catalog.open_catalog(args.root)
    say_damage(found)
    with plain_tables():
        for name, frame in catalog.summary(con=con).items():
            if name not in catalog.OPTIONAL_SECTIONS or frame.height:
                print(f"{SUMMARY_TITLES[name]}\n{frame if frame.height else '(no rows yet)'}\n")


def views(args) -> None:
    from sublevel import catalog

    print("\n".join(catalog.view_statements(args.root)))


def check_results(args) -> None:
    from sublevel import catalog, integrity, paths

    root = catalog.resolve_root(args.root)
    found = integrity.check(root)
    damaged, checked = found.damaged, found.checked
    for link in found.links:
        print(f"not checked: {link.relative_to(root)} is a link (to {os.readlink(link)}); sublevel neither "
              "follows nor removes links under results/")
    for d in damaged:
        print(f"damaged: {d.path.relative_to(root)}: {d.reason}")
    if unverified := found.unverified:
        print(f"{len(unverified)} result(s) written without checksums, whose flipped bytes cannot be seen (e.g. "
              f"{unverified[0].relative_to(root)}): the rest of each was read back; delete them to have them "
              "rewritten with checksums")
    if future := found.future:
        if not args.fix:
            sys.exit(integrity.future_line(future, root))
        integrity.set_times_to_now(future)
        print(f"dated {len(future)} result(s) now that were dated in the future: what reads them reruns once")
    if not damaged:
        print(f"{checked} results under {root / paths.results()} read back whole: no damage")
        return
    if not args.fix:
        sys.exit(f"{len(damaged)} of {checked} results damaged: `sublevel check-results --fix` removes them, and "
                 "the next snakemake run rebuilds them and what depends on them")
    if integrity.running(root):
        sys.exit("a snakemake run holds this directory's lock (.snakemake/locks): nothing removed; rerun "
                 "--fix once it has ended")
    integrity.remove(damaged, root)
    print(f"removed {len(damaged)} damaged results: `snakemake` rebuilds them and what depends on them")


def register(sub) -> None:
    results = results_parent()
    s = sub.add_parser("query", help="run SQL (DuckDB) over every results table", parents=[results])
    s.add_argument("sql", help="a SELECT over the views, e.g. \"select kind, burnin_step, d_star from threshold\" "
                               "(`sublevel views` lists them; every table is a view of its name)")
    s.add_argument("--format", choices=["table", "csv", "json"], default="table")
    s.set_defaults(func=query)

    s = sub.add_parser("summary", help="the key numbers per experiment", parents=[results])
    s.set_defaults(func=summary)

    s = sub.add_parser("jobs", parents=[results],
                       help="what the jobs behind the current results took, per rule (view `jobs`, from Snakemake's "
                            "records)")
    s.set_defaults(func=jobs)

    s = sub.add_parser("views", help="print the CREATE VIEW statements, e.g. for the duckdb shell", parents=[results])
    s.set_defaults(func=views)

    s = sub.add_parser("check-results", parents=[results],
                       help="read every store and table under results/ back in full; --fix removes the damaged")
    s.add_argument("--fix", action="store_true", help="remove the damaged results so the next run rebuilds them")
    s.set_defaults(func=check_results)
