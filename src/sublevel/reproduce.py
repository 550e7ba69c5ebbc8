"""The seed papers' published numbers beside what results/ measures.

`targets.csv` (paths.TARGETS, shipped with the package, columns in schema.TARGETS) holds one published number a row: the
paper and where in it, the preset and experiment that reproduce it, the quantity and its selectors, the
value, and a tolerance with its basis (the spread the paper itself reports, or none). Each quantity has one
SQL measure over the results views (MEASURES); the catalog's `reproduction` view is every target's measure,
joined to its target and judged, so `sublevel reproduce` and `sublevel query "select * from reproduction"`
give the same rows.

Judging: a ratio tolerance r holds when max(measured / published, published / measured) ≤ r; an absolute one
when |measured − published| ≤ tolerance; a claim's (CLAIMS: a paper's qualitative statement as a number measured
over a whole experiment) when measured ≥ published − tolerance (at_least) or ≤ published + tolerance
(at_most). A target whose experiment has no rows is `not run`; a measure that is null (d* never reached,
d_int90 not met at any tested d) is `not reached`; a threshold that is censored (P ≥ 1/2 at the smallest d,
or the anchor already inside the sublevel set) is `censored`, and so is a matching sparsity whose chains
still match at their sparsest level (a lower bound), unless that bound already lies beyond the tolerance,
which makes it `outside`; a target without a tolerance is `no tolerance`, with its difference still shown.
"""
from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.csv

from sublevel import paths, schema
from sublevel.kinds import KINDS
from sublevel.sql import duck_type, in_list, matching, quote

# One measure per quantity: (measured, lo, hi, n, found, censored) for one target, from the views. `lo`/`hi`:
# the measure's own interval (the bootstrap interval of d*; for d_int90 the grid's: the largest tested d below
# it, which missed, and itself; the seeds' range otherwise); n: runs or seeds
# behind it; found: rows the selectors matched (0: not run). Placeholders are the target's columns.
# A claim's d*, censored ones as the bound they are: `above` beyond every tested d, `anchor` 0 (SQL)
_SWEEP_KINDS = in_list(KINDS)  # the subspace table's sweeps, not its IMP tickets
_EFFECTIVE_D_STAR = "case censored when 'above' then cast('inf' as double) when 'anchor' then 0.0 else d_star end"
# Per IMP method and level, the means over chains of the early-stopping point (imp.eval_every): runs that
# diverged or recorded no validation curve are left out
_IMP_LEVELS = """
        with runs as (select method, level, sparsity, early_stop_step as step, early_stop_test_accuracy as acc
                      from imp where experiment = {experiment} and not diverged and early_stop_step is not null
                        and ({burnin_step} is null or rewind_step = {burnin_step})),
             lvl as (select method, level, avg(sparsity) as sparsity, avg(step) as es_step, avg(acc) as acc,
                            count(*) as n from runs group by method, level)"""
MEASURES: dict[str, str] = {
    "d_int90": """
        with t as (select any_value(d_int90) as d90, any_value(n_seeds) as n, count(*) as found from threshold
                   where experiment = {experiment} and kind = {kind} and burnin_step = {burnin_step})
        select cast(d90 as double),
               cast((select max(d) from subspace where experiment = {experiment} and kind = {kind}
                     and burnin_step = {burnin_step} and d < t.d90) as double),
               cast(d90 as double), n, found, cast(null as varchar) from t""",
    "d_star": """
        select any_value(d_star), any_value(d_star_lo), any_value(d_star_hi), any_value(n_seeds), count(*),
               any_value(censored)
        from threshold where experiment = {experiment} and kind = {kind} and burnin_step = {burnin_step}
          and metric = {metric} and threshold = {threshold}""",
    "dense_test_accuracy": """
        select avg(accuracy), min(accuracy), max(accuracy), count(*), count(*), cast(null as varchar)
        from train t where experiment = {experiment} and split = 'test' and not diverged
          and step = (select max(step) from train u where u.experiment = t.experiment and u.seed = t.seed)""",
    "highest_matching_sparsity": """
        with lvl as (select rewind_step, seed, sparsity, test_accuracy, matching_tolerance,
                            first_value(test_accuracy) over (partition by rewind_step, seed order by level) as dense
                     from imp where experiment = {experiment} and method = 'imp' and not diverged
                       and ({burnin_step} is null or rewind_step = {burnin_step})),
             best as (select seed, max(sparsity) filter (where """ + matching() + """) as s,
                             max(sparsity) as sparsest from lvl group by rewind_step, seed)
        select avg(s), min(s), max(s), count(s), count(*),
               case when bool_or(s = sparsest) then 'sparsest' else 'none' end from best""",
    # Frankle & Carbin 2019's own criteria, at each run's early-stopping point (imp.eval_every): per IMP level,
    # the means over chains; the dense network's bar is its mean less its seeds' sample standard deviation
    "matching_sparsity_at_early_stop": _IMP_LEVELS + """,
             bar as (select avg(acc) - coalesce(stddev_samp(acc), 0) as bar from runs
                     where method = 'imp' and level = 0),
             m as (select max(sparsity) filter (where acc >= (select bar from bar)) as s, max(sparsity) as sparsest,
                          min(n) as n, count(*) as found from lvl where method = 'imp')
        select s, s, (select min(sparsity) from lvl where method = 'imp' and sparsity > m.s), n, found,
               case when s = sparsest then 'sparsest' else 'none' end from m""",
    "fastest_learning_remaining": _IMP_LEVELS + """,
             imp as (select level, 1 - sparsity as remaining, es_step, n from lvl where method = 'imp'),
             best as (select level, remaining from imp order by es_step, level limit 1)
        select b.remaining, (select remaining from imp where level = b.level + 1),
               (select remaining from imp where level = b.level - 1), (select min(n) from imp),
               (select count(*) from imp),
               case when b.level = (select max(level) from imp) then 'last_level' else 'none' end
        from (select 1) as one left join best b on true""",
    "reinit_learns_slower": _IMP_LEVELS + """,
             pairs as (select cast(r.es_step > i.es_step as double) as holds from lvl i join lvl r using (level)
                       where i.method = 'imp' and r.method = 'random_reinit' and level >= 1)
        select avg(holds), cast(null as double), cast(null as double), count(*), count(*), cast(null as varchar)
        from pairs""",
    "imp_test_accuracy": """
        select avg(test_accuracy), min(test_accuracy), max(test_accuracy), count(*), count(*),
               cast(null as varchar)
        from imp where experiment = {experiment} and method = {kind} and level = {level} and not diverged
          and ({burnin_step} is null or rewind_step = {burnin_step})""",
    "barrier": """
        select avg(barrier), min(barrier), max(barrier), count(*), count(*), cast(null as varchar)
        from barrier where experiment = {experiment} and kind = {kind} and level = {level} and split = 'test'
          and ({burnin_step} is null or rewind_step = {burnin_step})""",
    # Larsen et al. 2022's claims, each a number measured over a whole experiment's sweeps, judged against a
    # bound (tolerance_type at_least or at_most). d* compares as censored: `above` beyond every tested d
    # (+inf), `anchor` 0, `below` its smallest tested d (an upper bound, taken as the value).
    "transition_factor": """
        with s as (select kind, burnin_step, metric, threshold, d, p_success from success
                   where experiment = {experiment} and kind in """ + _SWEEP_KINDS + """),
             hi as (select kind, burnin_step, metric, threshold, min(d) as d_hi from s where p_success >= 0.9
                    group by all),
             lo as (select s.kind, s.burnin_step, s.metric, s.threshold, max(s.d) as d_lo, hi.d_hi
                    from s join hi using (kind, burnin_step, metric, threshold)
                    where s.p_success <= 0.1 and s.d < hi.d_hi group by all),
             r as (select d_hi / d_lo as factor from lo)
        select max(factor), min(factor), max(factor), count(*),
               (select count(*) from s), cast(null as varchar) from r""",
    "dstar_rises_as_the_set_tightens": """
        with t as (select kind, burnin_step, metric, threshold, """ + _EFFECTIVE_D_STAR + """ as e,
                          case when metric like '%loss' then -threshold else threshold end as tightness
                   from threshold where experiment = {experiment} and kind in """ + _SWEEP_KINDS + """),
             pairs as (select e, lag(e) over (partition by kind, burnin_step, metric order by tightness) as looser
                       from t)
        select avg(cast(e >= looser as double)), cast(null as double), cast(null as double), count(looser),
               (select count(*) from t), cast(null as varchar) from pairs where looser is not null""",
    "dstar_falls_with_burnin": """
        with t as (select burnin_step, metric, threshold, """ + _EFFECTIVE_D_STAR + """ as e
                   from threshold where experiment = {experiment} and kind in ('random', 'burnin')),
             pairs as (select e, lag(e) over (partition by metric, threshold order by burnin_step) as earlier from t)
        select avg(cast(e <= earlier as double)), cast(null as double), cast(null as double), count(earlier),
               (select count(*) from t), cast(null as varchar) from pairs where earlier is not null""",
    "dstar_lottery_burnin_random_order": """
        with t as (select kind, burnin_step, metric, threshold, """ + _EFFECTIVE_D_STAR + """ as e
                   from threshold where experiment = {experiment} and kind in """ + _SWEEP_KINDS + """
                     and censored <> 'anchor'),  -- an anchor already in the set has no threshold to compare
             pairs as (select cast(a.e <= b.e as double) as holds from t a join t b using (metric, threshold)
                       where (a.kind = 'lottery' and b.kind in ('burnin', 'random'))
                          or (a.kind = 'burnin' and b.kind = 'random'))
        select avg(holds), cast(null as double), cast(null as double), count(*), (select count(*) from t),
               cast(null as varchar) from pairs""",
    "bound_above_measured": """
        with t as (select d_star, d_star_bound from dstar_predicted
                   where experiment = {experiment} and d_star_bound is not null),
             judged as (select cast(d_star_bound >= d_star as double) as holds from t
                        where d_star is not null)
        select avg(holds), cast(null as double), cast(null as double), count(*), (select count(*) from t),
               cast(null as varchar) from judged""",
}
# IMP quantities read a target's burnin_step as the chains' rewind step (imp.rewind may list several): the
# chains rewound there, or every chain of the experiment when it is empty.
REWOUND = ("highest_matching_sparsity", "imp_test_accuracy", "barrier", "matching_sparsity_at_early_stop",
           "fastest_learning_remaining", "reinit_learns_slower")
# What each quantity is, for the targets' readers (docs/results.md lists them).
QUANTITIES = {
    "d_int90": "Li et al.'s d_int90: the smallest tested d whose mean test accuracy reaches 0.9 x dense "
               "(interval: the tested d below it, which missed, and itself)",
    "d_star": "threshold training dimension d*(eps): P(d) crosses 1/2 (interval: bootstrap over seeds)",
    "dense_test_accuracy": "final test accuracy of the dense runs (mean; interval: the seeds' range)",
    "highest_matching_sparsity": "highest IMP sparsity that is matching: test accuracy within "
                                 "imp.matching_tolerance (the presets: 1 point) of the chain's level 0 "
                                 "(censored `sparsest` when a chain matches at its sparsest level: a lower bound)",
    "matching_sparsity_at_early_stop": "Frankle & Carbin's matching: the highest IMP sparsity whose test accuracy "
                                       "at early stopping (least validation loss), averaged over chains, is at "
                                       "least the dense network's less its seeds' standard deviation (interval: "
                                       "it and the next sparser level, which missed; censored `sparsest` when the "
                                       "sparsest level still matches)",
    "fastest_learning_remaining": "the fraction of weights remaining at the IMP level whose early-stopping "
                                  "iteration, averaged over chains, is the least (interval: the levels either "
                                  "side; censored `last_level` when that is the sparsest level run)",
    "reinit_learns_slower": "the fraction of IMP levels >= 1 at which random reinitialisation's early-stopping "
                            "iteration (averaged over chains) is later than the winning ticket's",
    "imp_test_accuracy": "test accuracy at an IMP level of a method (kind column: imp or a baseline)",
    "barrier": "test-error barrier at an IMP level (kind column: instability or imp_successive)",
    "transition_factor": "the sharpness of P(d)'s jump: per sweep and threshold, the smallest d with P >= 0.9 "
                         "over the largest smaller d with P <= 0.1; the largest such factor (interval: its range "
                         "over sweeps; n: sweeps with both ends tested)",
    "dstar_rises_as_the_set_tightens": "the fraction of pairs of adjacent thresholds of one sweep and metric in "
                                       "which the tighter set's d* is at least the looser one's",
    "dstar_falls_with_burnin": "the fraction of pairs of adjacent anchor steps t (random at 0, then each burn-in) "
                               "at one threshold in which the later anchor's d* is at most the earlier one's",
    "dstar_lottery_burnin_random_order": "the fraction of pairs at one threshold, lottery against each burn-in "
                                         "and random sweep and each burn-in against random, in which the first "
                                         "needs at most the second's d* (a sweep whose anchor is already in the "
                                         "set has no threshold and no pair)",
    "bound_above_measured": "the fraction of measured d* (not censored) that the quadratic-well bound of the "
                            "theory table lies at or above",
}
# Quantities judged one-sided: the claim holds when the measure is at least (or at most) the published value
CLAIMS = ("transition_factor", "dstar_rises_as_the_set_tightens", "dstar_falls_with_burnin",
          "dstar_lottery_burnin_random_order", "bound_above_measured", "reinit_learns_slower")
STATUSES = ("within", "outside", "no tolerance", "not reached", "censored", "not run")
TOLERANCE_TYPES = ("ratio", "absolute", "at_least", "at_most")


def read_targets(path=None) -> pa.Table:
    """The targets table (the shipped one unless `path`), typed by schema.TARGETS and checked: unique ids, a
    known quantity, the selectors that quantity needs, a tolerance with a type and a basis."""
    # one thread: arrow's CSV thread pool, started after torch's, can abort the process at exit (~1 in 5 exits
    # of `sublevel views` on a loaded 2-core machine: "terminate called without an active exception")
    with open(paths.TARGETS if path is None else path, "rb") as f:
        table = pa.csv.read_csv(f, read_options=pa.csv.ReadOptions(use_threads=False),
                                convert_options=pa.csv.ConvertOptions(column_types=schema.TARGETS.schema,
                                                                      strings_can_be_null=True))
    if table.schema.names != schema.TARGETS.schema.names:
        raise ValueError(f"targets: columns {table.schema.names}, expected {schema.TARGETS.schema.names}")
    rows = table.to_pylist()
    seen = set()
    for r in rows:
        where = f"targets: {r['target']!r}"
        if r["target"] in seen:
            raise ValueError(f"{where} appears twice")
        seen.add(r["target"])
        if r["quantity"] not in MEASURES:
            raise ValueError(f"{where}: unknown quantity {r['quantity']!r}; known: {sorted(MEASURES)}")
        if missing := [k for k in _required(r["quantity"]) if r[k] is None]:
            raise ValueError(f"{where}: quantity {r['quantity']} needs {missing}")
        if r["published"] is None or not math.isfinite(r["published"]):
            raise ValueError(f"{where}: no published value")
        if r["tolerance"] is not None and r["tolerance_type"] not in TOLERANCE_TYPES:
            raise ValueError(f"{where}: tolerance_type must be one of {TOLERANCE_TYPES}")
        if r["tolerance_type"] == "ratio" and r["tolerance"] is not None and r["tolerance"] < 1:
            raise ValueError(f"{where}: a ratio tolerance is at least 1")
        if not r["tolerance_basis"]:
            raise ValueError(f"{where}: say what the tolerance rests on (or why there is none)")
    return table


def _selectors(quantity: str) -> list[str]:
    """The target columns a quantity's measure reads."""
    return [k for k in ("experiment", "kind", "burnin_step", "metric", "threshold", "level")
            if "{" + k + "}" in MEASURES[quantity]]


def _required(quantity: str) -> list[str]:
    """The selectors a target of `quantity` must fill (an IMP quantity's rewind step is optional)."""
    return [k for k in _selectors(quantity) if not (k == "burnin_step" and quantity in REWOUND)]


def _literal(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return quote(value)
    return repr(float(value)) if isinstance(value, float) else str(int(value))


def view_statements(targets: pa.Table | None = None) -> list[str]:
    """CREATE VIEW statements for `targets` (the table as shipped) and `reproduction` (every target measured
    and judged), for the catalog's connection."""
    targets = read_targets() if targets is None else targets
    rows = targets.to_pylist()
    cols = schema.TARGETS.schema
    types = ", ".join(f"cast({c} as {duck_type(cols.field(c).type)}) as {c}" for c in cols.names)
    if rows:
        values = ", ".join("(" + ", ".join(_literal(r[c]) for c in cols.names) + ")" for r in rows)
        targets_sql = f"select {types} from (values {values}) as t({', '.join(cols.names)})"
        measured = " union all ".join(
            f"select {_literal(r['target'])} as target, * from ("
            + MEASURES[r["quantity"]].format(**{k: _literal(r[k]) for k in _selectors(r["quantity"])})
            + ") as m(measured, measured_lo, measured_hi, n, found, censored)" for r in rows)
    else:
        targets_sql = f"select {types} from (select 1) where false"
        measured = ("select cast(null as varchar) as target, cast(null as double) as measured, cast(null as double) "
                    "as measured_lo, cast(null as double) as measured_hi, 0 as n, 0 as found, "
                    "cast(null as varchar) as censored where false")
    within = """case when t.tolerance_type = 'ratio'
                                then greatest(m.measured / t.published, t.published / m.measured) <= t.tolerance
                     when t.tolerance_type = 'at_least' then m.measured >= t.published - t.tolerance
                     when t.tolerance_type = 'at_most' then m.measured <= t.published + t.tolerance
                                else abs(m.measured - t.published) <= t.tolerance end"""  # null: nothing to judge
    judged = f"""
        select target, paper, source, preset, experiment, quantity, kind, burnin_step, metric, threshold, level,
               published, measured, measured_lo, measured_hi, n_runs, difference, ratio, tolerance, tolerance_type,
               case when found = 0 then 'not run'
                    when censored = 'sparsest' and measured > published and not within
                         then 'outside'  -- a lower bound already beyond the tolerance decides it
                    when censored is not null and censored <> 'none' then 'censored'
                    when measured is null then 'not reached'
                    when tolerance is null then 'no tolerance'
                    when within then 'within'
                    else 'outside' end as status,
               censored, tolerance_basis, note
        from (select t.target, t.paper, t.source, t.preset, t.experiment, t.quantity, t.kind, t.burnin_step,
                     t.metric, t.threshold, t.level, t.published, m.measured, m.measured_lo, m.measured_hi,
                     m.n as n_runs, m.measured - t.published as difference, m.measured / t.published as ratio,
                     t.tolerance, t.tolerance_type, m.found, m.censored, t.tolerance_basis, t.note,
                     {within} as within
              from targets t join ({measured}) m using (target))"""
    return [f"CREATE OR REPLACE VIEW targets AS {targets_sql};",
            f"CREATE OR REPLACE VIEW reproduction AS {judged};"]


def markdown(frame, header: str) -> str:
    """docs/results.md: `header`, then one table a paper, then what each quantity means."""
    lines = [header, ""]
    for paper in dict.fromkeys(frame["paper"].to_list()):
        lines += [f"## {paper}", "", "| target | where | experiment | quantity | published | measured | interval "
                  "| n | status | tolerance | note |", "|---|---|---|---|---:|---:|---|---:|---|---|---|"]
        for r in frame.filter(frame["paper"] == paper).iter_rows(named=True):
            opening = "(" if r["quantity"] == "d_int90" else "["  # d_int90's lower end is a d that missed
            interval = (f"{opening}{_num(r['measured_lo'])}, {_num(r['measured_hi'])}]"
                        if r["measured_lo"] is not None or r["measured_hi"] is not None else "")
            tol = ({"ratio": f"x{r['tolerance']:g}", "at_least": f"≥ {_num(r['published'] - r['tolerance'])}",
                    "at_most": f"≤ {_num(r['published'] + r['tolerance'])}"}.get(r["tolerance_type"],
                                                                                 f"±{r['tolerance']:g}")
                   if r["tolerance"] is not None else "none")
            status = r["status"] + (f" ({r['censored']})" if r["status"] == "censored" else
                                    " (a lower bound)" if r["censored"] == "sparsest" else "")
            if r["quantity"] in CLAIMS and r["status"] in ("within", "outside"):
                status = "holds" if r["status"] == "within" else "fails"
            elif r["status"] in ("within", "outside", "no tolerance"):
                status += (f", {r['ratio']:.3f}x published" if r["published"] else  # a ratio to 0 says nothing
                           f", {r['difference']:+.4g} from published")
            lines.append(f"| {r['target']} | {r['source']} | {r['experiment']} | {r['quantity']} | "
                         f"{_num(r['published'])} | {_num(r['measured'])} | {interval} | {r['n_runs'] or ''} | "
                         f"{status} | {tol}: {r['tolerance_basis']} | {r['note'] or ''} |")
        lines.append("")
        for r in frame.filter((frame["paper"] == paper) & (frame["status"] == "outside")).iter_rows(named=True):
            lines.append(f"- {r['target']} misses: " + _miss(r))
        lines.append("")
    lines += ["Quantities:", ""] + [f"- `{q}`: {doc}" for q, doc in QUANTITIES.items()]
    return "\n".join(lines) + "\n"


def _miss(r: dict) -> str:
    """By how much an `outside` target misses, in its tolerance's own terms."""
    if r["censored"] == "sparsest":  # a lower bound (the chains match at their sparsest level)
        lead = (f"at least {_num(r['measured'])} (the chains still match at their sparsest level) against "
                f"{_num(r['published'])}: ")
        if r["tolerance_type"] == "ratio":
            return lead + f"a factor of at least {r['ratio']:.3f}, beyond the tolerance's {r['tolerance']:g}."
        return lead + (f"at least {r['difference']:.4g} above, beyond the tolerance's {r['tolerance']:g} by at "
                       f"least {r['difference'] - r['tolerance']:.4g}.")
    if r["tolerance_type"] in ("at_least", "at_most"):
        side = "below" if r["tolerance_type"] == "at_least" else "above"
        bound = r["published"] - r["tolerance"] if side == "below" else r["published"] + r["tolerance"]
        return f"{_num(r['measured'])} lies {side} the claim's {_num(bound)} ({QUANTITIES[r['quantity']]})."
    if r["tolerance_type"] == "ratio":
        off = max(r["ratio"], 1 / r["ratio"])
        return (f"{_num(r['measured'])} against {_num(r['published'])} is a factor {off:.3f}, beyond the "
                f"tolerance's {r['tolerance']:g} by {off - r['tolerance']:.3f}.")
    return (f"{_num(r['measured'])} against {_num(r['published'])} differs by {abs(r['difference']):.4g}, "
            f"beyond the tolerance's {r['tolerance']:g} by {abs(r['difference']) - r['tolerance']:.4g}.")


def _num(x) -> str:
    if x is None:
        return "–"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.4g}"




def header(root: Path, con) -> str:
    """What docs/results.md was made from: the commit, the machine the command ran on, and the devices the
    results' own runs record (a GPU run's tables say so)."""
    import datetime
    import os
    import platform
    import subprocess

    def git(*args):
        try:
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    commit = git("rev-parse", "--short", "HEAD") or "unknown (not a git checkout)"
    if git("status", "--porcelain", "--untracked-files=no", "--", "src", "workflow", "config", "Snakefile"):
        commit += " with uncommitted changes to the code or configs"
    cpu = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    devices = [r[0] for r in con.sql("select distinct device from train where device is not null order by 1").fetchall()]
    return "\n".join([
        "# Reproductions: the seed papers' numbers beside sublevel's",
        "",
        f"Made by `sublevel reproduce --format markdown --out docs/results.md` on {datetime.date.today().isoformat()} at commit {commit}, "
        f"on {platform.system()} {cpu} ({os.cpu_count()} logical cores), from the results under {root.name}/results. "
        f"Devices the dense runs record: {', '.join(devices) or 'none (no dense run in results/)'}.",
        "",
        "Each row is one published number (src/sublevel/targets.csv), measured by the SQL in sublevel.reproduce "
        "from the results views; `sublevel query \"select * from reproduction\"` gives the same rows. What was "
        "checked for each miss: docs/reproduction-notes.md.",
    ])
