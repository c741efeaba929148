"""Run the linger-sched benchmarks and print one table (and write benchmarks/RESULTS.md).

    bash benchmarks/setup.sh                                     # once: benchmarks/.venv with the peers
    nice -n 10 benchmarks/.venv/bin/python benchmarks/run_all.py  # everything, 3 runs each (~25 min)
    benchmarks/.venv/bin/python benchmarks/run_all.py --quick     # smoke run (~5 min)
    benchmarks/.venv/bin/python benchmarks/run_all.py --only drain,raw --runs 5 --db sqlite

Benchmarks (``--only``/``--skip`` take these names): raw (1), drain (2), peers (3), enqueue (4),
latency (5), tick (6), memory (7), history (8), dashboard (9), metrics (10). raw, drain and peers are interleaved run by run
(every raw-loop table variant and the drain on one database back to back), so each ratio is
computed per run from figures measured next to each other, on the same database; the table
shows the median ratio with min and max. Issue 11's drain targets are judged here: SQLite
>= 30,000 jobs/s and >= 0.3x the narrow raw loop, PostgreSQL >= 0.6x its raw loop (the loop
over linger_jobs as installed).

latency runs idle on every database, then under ``--background-rate`` (default 5,000 jobs/s;
0 leaves it out) on SQLite and PostgreSQL. history builds ``--history-rows`` rows (default
1,000,000; --quick 50,000) per database: about 6 minutes for the three; dashboard builds the same
rows and 10,000 schedules on SQLite and PostgreSQL and times every page (about 4 minutes);
metrics builds them again on every database and times a Prometheus scrape (about 6 minutes).
Every process runs at nice 10 (this one renices itself; children inherit it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import dashboard, drain, enqueue, history, latency, memory, metrics, peers, raw_limit, tick
from benchmarks.common import (
    HERE,
    INCIDENTS,
    Ctx,
    Row,
    base_parser,
    ctx_from_args,
    machine_facts,
    retrying,
    say,
    table,
)

NAMES = ("raw", "drain", "peers", "enqueue", "latency", "tick", "memory", "history", "dashboard", "metrics")
START, END = "<!-- run_all:start -->", "<!-- run_all:end -->"


def ratio_row(bench: str, db: str, metric: str, num: list[float], den: list[float]) -> Row:
    return Row(bench, db, metric, [a / b for a, b in zip(num, den)], "x")


def drain_ratios(db: str, raw: list[dict[str, dict[str, float]]], dr: list[dict[str, float]]) -> list[Row]:
    """The drain against the raw loops of the same run (issue 11's targets): against the narrow
    table (SQLite >= 0.3x; the long-term aim is 0.5x) and against the loop over linger_jobs as
    installed, "its raw loop" (PostgreSQL >= 0.6x). Start-to-exit is compared with the raw
    loop's start-to-exit, first-to-last with the raw loop's loop figure."""
    rows: list[Row] = []
    if not raw or not dr:
        return rows
    for variant, name, bound in (("narrow", "narrow raw loop", {"sqlite": 0.3}),
                                 (raw_limit.BASELINE, "raw loop over linger_jobs", {"postgresql": 0.6})):
        if variant not in raw[0]:
            continue
        a = ratio_row("2 drain", db, f"drain / {name}, start-to-exit",
                      [x["start_to_exit"] for x in dr], [x[variant]["start_to_exit"] for x in raw])
        b = ratio_row("2 drain", db, f"drain / {name}, first-to-last job vs the loop",
                      [x["first_to_last"] for x in dr], [x[variant]["loop"] for x in raw])
        if db in bound:
            a.judge(">=", bound[db], shown=f">= {bound[db]}x")
            b.judge(">=", bound[db], shown=f">= {bound[db]}x")
            if variant == "narrow":
                a.note = "issue 11's long-term aim: 0.5x the narrow loop"
        rows += [a, b]
    return rows


def throughput(ctx: Ctx, selected: set[str]) -> list[Row]:
    """raw, drain and peers, interleaved run by run; plus the ratios between them."""
    raw: dict[str, list[dict[str, dict[str, float]]]] = {db: [] for db in ctx.dbs}
    dr: dict[str, list[dict[str, float]]] = {db: [] for db in ctx.dbs}
    huey_cfgs = [(peers.HUEY_WORKERS, "8 threads, comparable to linger-sched's 8"), (1, "huey's default: 1 thread")]
    proc_cfgs = [(peers.PROCRASTINATE_CONCURRENCY, "8, comparable"), (1, "its default")]
    huey_vals: dict[int, list[float]] = {w: [] for w, _ in huey_cfgs}
    proc_vals: dict[int, list[float]] = {c: [] for c, _ in proc_cfgs}
    peers_ok = "peers" in selected and peers.available() is None
    if "peers" in selected and not peers_ok:
        say(f"[peers] skipped: {peers.available()}")
    for r in range(ctx.runs):
        for db in ctx.dbs:
            if "raw" in selected:  # every table variant, back to back (each retried on its own)
                raw[db].append(raw_limit.measure_all(ctx, db, r))
            if "drain" in selected:
                dr[db].append(retrying(f"drain {db} run {r + 1}", lambda db=db: drain.measure_once(ctx, db)))
                say(f"[drain] {db} run {r + 1}: {dr[db][-1]['start_to_exit']:,.0f} jobs/s start-to-exit, "
                    f"{dr[db][-1]['first_to_last']:,.0f} first-to-last")
        if peers_ok and "sqlite" in ctx.dbs:
            for w, _ in huey_cfgs:
                huey_vals[w].append(retrying(f"huey ({w} threads) run {r + 1}", lambda w=w: peers.measure_huey_once(ctx, w)))
                say(f"[peers] huey ({w} threads) run {r + 1}: {huey_vals[w][-1]:,.0f} jobs/s")
        if peers_ok and "postgresql" in ctx.dbs:
            for c, _ in proc_cfgs:
                proc_vals[c].append(retrying(f"procrastinate ({c}) run {r + 1}", lambda c=c: peers.measure_procrastinate_once(ctx, c)))
                say(f"[peers] procrastinate (concurrency {c}) run {r + 1}: {proc_vals[c][-1]:,.0f} jobs/s")

    rows: list[Row] = []
    for db in ctx.dbs:
        if raw[db]:
            rows += raw_limit.rows_from(ctx, db, raw[db])
        if dr[db]:
            rows += drain.rows_from(ctx, db, dr[db])
        if dr[db] and db == "sqlite":  # issue 11: SQLite >= 30,000 jobs/s
            for row in rows[-2:]:
                row.judge(">=", 30_000, shown=">= 30,000")
        rows += drain_ratios(db, raw[db], dr[db])
    if any(huey_vals.values()):
        for w, why in huey_cfgs:
            row = peers.huey_row(ctx, huey_vals[w], w)
            row.note = why
            rows.append(row)
            if dr.get("sqlite"):
                rows.append(ratio_row("3 peers", "sqlite", f"linger drain / huey ({w} thread{'s' if w > 1 else ''}), start-to-exit",
                                      [x["start_to_exit"] for x in dr["sqlite"]], huey_vals[w]).judge(">=", 5, shown=">= 5x"))
    if any(proc_vals.values()):
        for c, why in proc_cfgs:
            row = peers.procrastinate_row(ctx, proc_vals[c], c)
            row.note = why
            rows.append(row)
            if dr.get("postgresql"):
                rows.append(ratio_row("3 peers", "postgresql", f"linger drain / procrastinate (concurrency {c}), start-to-exit",
                                      [x["start_to_exit"] for x in dr["postgresql"]], proc_vals[c]).judge(">=", 5, shown=">= 5x"))
    return rows


def write_results(path: Path, ctx: Ctx, rows: list[Row], command: str, seconds: float, facts: list[tuple[str, str]]) -> None:
    lines = [
        START,
        "## Results of the last full run",
        "",
        f"Command: `{command}` ({seconds / 60:.1f} min). Every figure is the median of {ctx.runs} runs, with min and max; "
        "a ratio is computed per run from two figures measured back to back on the same database, then its median taken. "
        "Status compares the median with the target.",
        "",
        "### Machine",
        "",
        "| fact | value |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in facts),
        "",
        "### Table",
        "",
        "```",
        table(rows),
        "```",
        "",
        *(["Failed attempts that were retried (the fault tests restart the database servers on this machine):", "",
           *(f"- {i}" for i in INCIDENTS), ""] if INCIDENTS else ["No measurement failed or was retried.", ""]),
        END,
    ]
    block = "\n".join(lines)
    text = path.read_text() if path.exists() else "# linger-sched benchmark results\n\n" + START + "\n" + END + "\n"
    if START in text and END in text:
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1]
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def main() -> None:
    ap: argparse.ArgumentParser = base_parser(__doc__)
    ap.add_argument("--only", help=f"comma-separated subset of {','.join(NAMES)}")
    ap.add_argument("--skip", default="", help="comma-separated benchmarks to leave out")
    ap.add_argument("--results", type=Path, help="Markdown file to update (default: benchmarks/RESULTS.md on a full run of "
                    "everything, none otherwise)")
    ap.add_argument("--json", type=Path, help="also dump the raw per-run values as JSON")
    ap.add_argument("--background-rate", type=float, default=5000.0,
                    help="latency under this many background jobs/s on SQLite and PostgreSQL (default 5000; 0: idle only)")
    ap.add_argument("--history-rows", type=int, default=None, help="rows of the history benchmark (default 1,000,000)")
    args = ap.parse_args()
    selected = set((args.only or ",".join(NAMES)).split(",")) - set(args.skip.split(","))
    unknown = selected - set(NAMES)
    if unknown:
        ap.error(f"unknown benchmark(s): {sorted(unknown)}")
    ctx = ctx_from_args(args)
    command = "nice -n 10 " + " ".join([Path(sys.executable).relative_to(Path.cwd()).as_posix()
                                        if Path(sys.executable).is_relative_to(Path.cwd()) else sys.executable,
                                        *sys.argv])
    facts = machine_facts(ctx.dbs)
    say("[bench] " + "; ".join(f"{k}: {v}" for k, v in facts))
    t0 = time.perf_counter()
    rows: list[Row] = []
    try:
        if selected & {"raw", "drain", "peers"}:
            rows += throughput(ctx, selected)
        if "enqueue" in selected:
            rows += enqueue.run(ctx)
        if "latency" in selected:
            rows += latency.run(ctx)
            loaded = [d for d in ctx.dbs if d in latency.LOADED_DBS]
            if args.background_rate > 0 and loaded:
                rows += latency.run_loaded(ctx, args.background_rate, loaded)
        if "tick" in selected:
            rows += tick.run(ctx)
        if "memory" in selected and "sqlite" in ctx.dbs:
            rows += retrying("memory", lambda: memory.run(ctx), attempts=2)
        if "history" in selected:
            ctx.extra["history_rows"] = args.history_rows
            rows += history.run(ctx)
        if "dashboard" in selected:
            ctx.extra["dashboard_rows"] = args.history_rows
            rows += dashboard.run(ctx)
        if "metrics" in selected:
            ctx.extra["metrics_rows"] = args.history_rows
            rows += metrics.run(ctx)
    finally:
        shutil.rmtree(ctx.tmp, ignore_errors=True)
    seconds = time.perf_counter() - t0
    print(table(rows))
    judged = [r for r in rows if r.status]
    print(f"\ntargets: {sum(r.status == 'met' for r in judged)} met, {sum(r.status != 'met' for r in judged)} missed; "
          f"{seconds / 60:.1f} min")
    if INCIDENTS:
        print("\nfailed attempts that were retried:\n" + "\n".join(f"- {i}" for i in INCIDENTS))
    results = args.results
    if results is None and not args.quick and selected == set(NAMES) and args.runs >= 3:
        results = HERE / "RESULTS.md"
    if results is not None:
        write_results(results, ctx, rows, command, seconds, facts)
        say(f"[bench] wrote {results}")
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=1))


if __name__ == "__main__":
    main()
