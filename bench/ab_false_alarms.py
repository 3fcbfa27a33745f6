"""How often ``accelnet bench ab`` alarms when nothing changed, and what it catches: one long A/A
stream of rounds replayed through the stopping rule.

    python bench/ab_false_alarms.py --minutes 30 --json aa.json              # CI's short form
    python bench/ab_false_alarms.py --minutes 20 --min-time 0.5 --budget 0 --json default.json   # bench ab's defaults
    python bench/ab_false_alarms.py --replay aa.json                          # the tables again

HEAD is built twice, into two directories (as CI builds BASELINE and the working tree), and
``run_ab`` times the two against each other round after round for ``--minutes``, exactly as a
run does (fresh processes, ABBA bursts, foreign-load repeats). Since every round starts fresh
processes, consecutive rounds cut where ``ab.finished`` stops a run are A/A runs: the first table
counts them. The second resamples whole rounds (all workloads together) into ``--resamples`` runs
per threshold, each ended by the same rule, for rates below what a count can show; the third
multiplies one workload's HEAD samples by 1 + d in such runs: the slowdowns the settings catch.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
from pathlib import Path

from accelnet import ab

ROOT = Path(__file__).resolve().parents[1]
THRESHOLDS = (0.01, 0.02, 0.03, 0.05, 0.10)
SLOWDOWNS = (0.01, 0.02, 0.03, 0.05, 0.07, 0.10, 0.15)


def stream(minutes: float, workloads, min_time: float, log=print) -> dict:
    """``ab.json``'s document of a ``minutes``-long A/A run of HEAD against a second build of HEAD."""
    with tempfile.TemporaryDirectory() as tmp:
        a, label = ab.build(ROOT, "HEAD", Path(tmp) / "a")
        b, _ = ab.build(ROOT, "HEAD", Path(tmp) / "b")
        result = ab.run_ab(a, b, label, label, workloads, min_time=min_time, min_rounds=10 ** 9,
                           max_rounds=10 ** 9, budget_s=minutes * 60, log=log)
        return {**result.to_json(), "min_time": min_time}


def _run(rounds, workloads, threshold, rules, slow: dict | None = None) -> ab.ABResult | None:
    """One run over ``rounds`` (an iterator: what it takes is consumed) until the stopping rule
    ends it; None if the rounds run out first."""
    r = ab.ABResult("A", "A", list(workloads), threshold)
    for rnd in rounds:
        if slow:
            rnd = {**rnd, "head": {w: t * slow.get(w, 1.0) for w, t in rnd["head"].items()}}
        r.rounds.append(rnd)
        r.seconds += rnd["seconds"]
        if ab.finished(r, *rules):
            return r
    return None


def consecutive(doc: dict, threshold: float, rules) -> list[ab.ABResult]:
    """The stream cut into the runs the stopping rule would have made (a last unfinished one dropped)."""
    runs, rounds = [], iter(doc["rounds"])
    while (r := _run(rounds, doc["workloads"], threshold, rules)) is not None:
        runs.append(r)
    return runs


def resampled(doc: dict, threshold: float, rules, n: int, seed: int = 0, slow: dict | None = None):
    """``n`` runs of rounds drawn at random, with replacement, from the stream."""
    rng, rounds = random.Random(seed), doc["rounds"]
    out = []
    while len(out) < n:
        r = _run((rng.choice(rounds) for _ in range(10 ** 6)), doc["workloads"], threshold, rules, slow)
        out.append(r)
    return out


def _upper95(k: int, n: int) -> float:
    """The one-sided 95% upper bound of a rate seen k times in n (Clopper-Pearson)."""
    if k >= n:
        return 1.0
    lo, hi = k / n, 1.0
    for _ in range(60):  # bisection on P(X <= k; p) = 0.05
        mid = (lo + hi) / 2
        cdf = sum(math.comb(n, i) * mid ** i * (1 - mid) ** (n - i) for i in range(k + 1))
        lo, hi = (mid, hi) if cdf > 0.05 else (lo, mid)
    return hi


def report(doc: dict, rules, resamples: int) -> str:
    w = doc["workloads"]
    secs = [r["seconds"] for r in doc["rounds"]]
    lines = [f"A/A stream: {len(doc['rounds'])} rounds ({sum(r['quiet'] for r in doc['rounds'])} quiet) in "
             f"{doc['seconds'] / 60:.0f} min, {min(secs):.1f}-{max(secs):.1f} s per round, --min-time "
             f"{doc['min_time']}, rounds {rules[0]}-{rules[1]}, budget {rules[2]} s; workloads {', '.join(w)}", "",
             "Per-round HEAD/BASE, all rounds: " + "; ".join(
                 f"{x} {min(rs):.3f}-{max(rs):.3f}" for x in w
                 for rs in [[r['head'][x] / r['base'][x] for r in doc['rounds']]]), "",
             "| threshold | consecutive A/A runs flagged | their largest lower bound | resampled runs flagged "
             "(95% upper bound of the rate) | resampled runs 'slower' or worse |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    for t in THRESHOLDS:
        runs = consecutive(doc, t, rules)
        flagged = sum(bool(r.regressions) for r in runs)
        low = max((s["ci_low"] for r in runs for s in r.summaries()), default=math.nan)
        res = resampled(doc, t, rules, resamples)
        k = sum(bool(r.regressions) for r in res)
        slower = sum(any(s["verdict"] in ("slower", "regression") for s in r.summaries()) for r in res)
        lines.append(f"| {t:.0%} | {flagged} of {len(runs)} | {low:.3f} | {k} of {len(res)} ({_upper95(k, len(res)):.2%}) "
                     f"| {slower} of {len(res)} |")
    lines += ["", "Slowdowns injected into one workload's HEAD samples (resampled runs, "
              f"{max(1, resamples // 5)} each): share flagged as a regression / as slower or worse",
              "", "| workload | threshold | " + " | ".join(f"+{d:.0%}" for d in SLOWDOWNS) + " |",
              "| --- | ---: | " + " | ".join("---:" for _ in SLOWDOWNS) + " |"]
    for x in w:
        for t in (0.05, 0.10):
            cells = []
            for d in SLOWDOWNS:
                res = resampled(doc, t, rules, max(1, resamples // 5), seed=1, slow={x: 1 + d})
                reg = sum(r.summary(x)["verdict"] == "regression" for r in res) / len(res)
                slow = sum(r.summary(x)["verdict"] in ("regression", "slower") for r in res) / len(res)
                cells.append(f"{reg:.0%} / {slow:.0%}")
            lines.append(f"| {x} | {t:.0%} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--min-time", type=float, default=0.2, help="as bench ab's (CI's short form: 0.2)")
    p.add_argument("--workloads", default=",".join(ab.DEFAULT_WORKLOADS))
    p.add_argument("--min-rounds", type=int, default=8)
    p.add_argument("--max-rounds", type=int, default=20)
    p.add_argument("--budget", type=float, default=200, help="as bench ab's (CI's short form: 200; 0: none, the default's)")
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--json", help="write the stream here")
    p.add_argument("--replay", help="report on a stream written before instead of timing one")
    args = p.parse_args(argv)
    if args.replay:
        doc = json.loads(Path(args.replay).read_text())
    else:
        doc = stream(args.minutes, args.workloads.split(","), args.min_time,
                     log=lambda line: print(line, file=sys.stderr, flush=True))
        if args.json:
            Path(args.json).write_text(json.dumps(doc))
    print(report(doc, (args.min_rounds, args.max_rounds, args.budget or None), args.resamples))


if __name__ == "__main__":
    main()
