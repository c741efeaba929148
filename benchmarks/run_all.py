"""Run the linger-sched benchmarks and print one table (and write benchmarks/RESULTS.md).

    bash benchmarks/setup.sh                                     # once: benchmarks/.venv with the peers
    nice -n 10 benchmarks/.venv/bin/python benchmarks/run_all.py  # everything, 3 runs each (~15 min)
    benchmarks/.venv/bin/python benchmarks/run_all.py --quick     # smoke run (~3 min)
    benchmarks/.venv/bin/python benchmarks/run_all.py --only drain,raw --runs 5 --db sqlite

Benchmarks (``--only``/``--skip`` take these names): raw (1), drain (2), peers (3), enqueue (4),
latency (5), tick (6), memory (7). raw, drain and peers are interleaved run by run (raw and
drain on one database back to back), so each ratio is computed per run from figures measured
next to each other, on the same database; the table shows the median ratio with min and max.
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

from benchmarks import drain, enqueue, latency, memory, peers, raw_limit, tick
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

NAMES = ("raw", "drain", "peers", "enqueue", "latency", "tick", "memory")
START, END = "<!-- run_all:start -->", "<!-- run_all:end -->"


def ratio_row(bench: str, db: str, metric: str, num: list[float], den: list[float]) -> Row:
    return Row(bench, db, metric, [a / b for a, b in zip(num, den)], "x")


def throughput(ctx: Ctx, selected: set[str]) -> list[Row]:
    """raw, drain and peers, interleaved run by run; plus the ratios between them."""
    raw: dict[str, list[dict[str, float]]] = {db: [] for db in ctx.dbs}
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
            if "raw" in selected:
                raw[db].append(retrying(f"raw {db} run {r + 1}", lambda: raw_limit.measure_once(ctx, db)))
                say(f"[raw] {db} run {r + 1}: {raw[db][-1]['start_to_exit']:,.0f} jobs/s start-to-exit, "
                    f"{raw[db][-1]['loop']:,.0f} in the loop")
            if "drain" in selected:
                dr[db].append(retrying(f"drain {db} run {r + 1}", lambda: drain.measure_once(ctx, db)))
                say(f"[drain] {db} run {r + 1}: {dr[db][-1]['start_to_exit']:,.0f} jobs/s start-to-exit, "
                    f"{dr[db][-1]['first_to_last']:,.0f} first-to-last")
        if peers_ok and "sqlite" in ctx.dbs:
            for w, _ in huey_cfgs:
                huey_vals[w].append(retrying(f"huey ({w} threads) run {r + 1}", lambda: peers.measure_huey_once(ctx, w)))
                say(f"[peers] huey ({w} threads) run {r + 1}: {huey_vals[w][-1]:,.0f} jobs/s")
        if peers_ok and "postgresql" in ctx.dbs:
            for c, _ in proc_cfgs:
                proc_vals[c].append(retrying(f"procrastinate ({c}) run {r + 1}", lambda: peers.measure_procrastinate_once(ctx, c)))
                say(f"[peers] procrastinate (concurrency {c}) run {r + 1}: {proc_vals[c][-1]:,.0f} jobs/s")

    rows: list[Row] = []
    for db in ctx.dbs:
        if raw[db]:
            rows += raw_limit.rows_from(ctx, db, raw[db])
        if dr[db]:
            rows += drain.rows_from(ctx, db, dr[db])
        if raw[db] and dr[db]:
            a = ratio_row("2 drain", db, "drain / raw limit, start-to-exit",
                          [x["start_to_exit"] for x in dr[db]], [x["start_to_exit"] for x in raw[db]])
            b = ratio_row("2 drain", db, "drain / raw limit, first-to-last job vs raw loop",
                          [x["first_to_last"] for x in dr[db]], [x["loop"] for x in raw[db]])
            if db in ("sqlite", "postgresql"):
                a.judge(">=", 0.5, shown=">= 0.5x")
                b.judge(">=", 0.5, shown=">= 0.5x")
            rows += [a, b]
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
        if "tick" in selected:
            rows += tick.run(ctx)
        if "memory" in selected and "sqlite" in ctx.dbs:
            rows += retrying("memory", lambda: memory.run(ctx), attempts=2)
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
