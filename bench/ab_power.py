"""The false-alarm rate and the power of ``accelnet bench ab`` on this machine.

    python bench/ab_power.py [--runs 10] [--passes 8,3] [--workloads step:deep_convnet] [--json OUT]

Clones this repository into a temporary folder and commits, on top of HEAD, a real slowdown:
``passes`` extra passes over every layer's activations in ``Sequential.forward`` (the A/B
estimates what each costs deep_convnet's step). Then runs ``accelnet bench ab`` with its default settings
``--runs`` times for HEAD against itself (A/A: any regression is a false alarm) and for each
slowed commit against HEAD (A/B), and prints each run: the estimated ratio, its 95% interval, the
verdict, the rounds and the seconds it took. From the intervals it also states, for thresholds
from 1% to 10%, how many A/A runs would have alarmed and how many A/B runs would have been caught.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORWARD = "        for layer in self.layers:\n            x = layer.forward(x)\n"


def slowed_clone(where: Path, passes: list[int]) -> tuple[Path, str, dict]:
    """A clone of this repository's HEAD with one commit per slowdown: (repo, HEAD, {passes: sha})."""
    repo = where / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True,  # noqa: E731
                                    text=True).stdout.strip()
    base = git("rev-parse", "HEAD")
    model = repo / "accelnet" / "model.py"
    source = model.read_text()
    if FORWARD not in source:
        sys.exit("Sequential.forward changed: update FORWARD in bench/ab_power.py")
    commits = {}
    for n in passes:
        git("checkout", "-q", base)
        extra = "".join("            x = x * 1.0  # injected slowdown\n" for _ in range(n))
        model.write_text(source.replace(FORWARD, FORWARD + extra))
        git("-c", "user.name=ab", "-c", "user.email=ab@localhost", "commit", "-q", "-am", f"{n} extra passes")
        commits[n] = git("rev-parse", "HEAD")
    git("checkout", "-q", base)
    return repo, base, commits


def ab_run(repo: Path, base: str, head: str, workloads: str, cache: Path, out: Path) -> list[dict]:
    """One ``accelnet bench ab`` with default settings: its summaries, with its seconds."""
    done = subprocess.run([sys.executable, "-m", "accelnet.cli", "bench", "ab", base, head, "--repo", str(repo),
                           "--workloads", workloads, "--cache", str(cache), "--out", str(out)],
                          capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise RuntimeError(done.stderr[-3000:])
    doc = json.loads((out / "ab.json").read_text())
    return [{**s, "seconds": doc["seconds"], "quiet_rounds": sum(r["quiet"] for r in doc["rounds"])}
            for s in doc["summaries"]]


def power(runs: int = 10, passes=(8,), workloads: str = "step:deep_convnet", log=print) -> dict:
    """{"A/A": [summaries], "A/B +N passes": [...]}: ``runs`` A/B runs of each kind, interleaved."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        repo, base, commits = slowed_clone(tmp, list(passes))
        kinds = {"A/A": base, **{f"A/B +{n} passes": sha for n, sha in commits.items()}}
        results = {k: [] for k in kinds}
        for i in range(runs):
            for kind, head in kinds.items():
                summaries = ab_run(repo, base, head, workloads, tmp / "cache", tmp / "out")
                results[kind].append(summaries)
                log(f"run {i + 1} {kind}: " + "; ".join(
                    f"{s['workload']} {s['ratio']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}] {s['verdict']}, "
                    f"{s['rounds']} rounds, {s['seconds']:.0f} s" for s in summaries))
        return results


def report(results: dict) -> str:
    lines = ["| kind | run | workload | HEAD/BASE | 95% interval | verdict | rounds (quiet) | seconds |",
             "| --- | ---: | --- | ---: | --- | --- | --- | ---: |"]
    for kind, runs in results.items():
        for i, summaries in enumerate(runs, 1):
            for s in summaries:
                lines.append(f"| {kind} | {i} | {s['workload']} | {s['ratio']:.3f} | {s['ci_low']:.3f}-{s['ci_high']:.3f} "
                             f"| {s['verdict']} | {s['rounds']} ({s['quiet_rounds']}) | {s['seconds']:.0f} |")
    lines += ["", "| threshold | " + " | ".join(f"{k}: flagged" for k in results) + " |",
              "| ---: | " + " | ".join("---:" for _ in results) + " |"]
    for t in (0.01, 0.02, 0.03, 0.05, 0.07, 0.10):
        cells = [f"{sum(s['ci_low'] > 1 + t for run in runs for s in run)} of {sum(len(run) for run in runs)}"
                 for runs in results.values()]
        lines.append(f"| {t:.0%} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--passes", default="8", help="comma-separated extra passes, one slowed commit each")
    p.add_argument("--workloads", default="step:deep_convnet")
    p.add_argument("--json", help="write every run's summaries here")
    args = p.parse_args(argv)
    results = power(args.runs, [int(n) for n in args.passes.split(",")], args.workloads,
                    log=lambda line: print(line, file=sys.stderr, flush=True))
    print(report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
