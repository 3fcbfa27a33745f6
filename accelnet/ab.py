"""Interleaved A/B benchmark of two revisions with a statistical verdict (``accelnet bench ab``),
and of accelnet against PyTorch eager on the same workloads (``accelnet bench``'s PyTorch columns).

Absolute times on shared machines move 10-30% between runs, so a regression gate cannot compare
against a stored number. As airspeed velocity's ``asv continuous`` does, both revisions are built
(each in its own directory, dependencies shared: only the package differs) and timed on the same
machine. Each round starts a fresh process per revision and alternates them in bursts of a few
hundredths of a second (ABBA), so the machine's drift, which here moves a step's time by 7% over
seconds, hits both alike; each side's sample is the lower quartile of its calls (other work only
adds time). Rounds alternate which side starts, after a discarded warm-up round. Each round gives
one paired ratio HEAD/BASE per workload; the verdict comes from the Hodges-Lehmann estimate of
the ratio and its 95% confidence interval (the Wilcoxon signed-rank interval of the
log ratios: no normality assumed, exact for any number of rounds). Rounds during which other
processes took CPU time (``/proc/stat``) are repeated.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ABError", "DEFAULT_WORKLOADS", "build", "hodges_lehmann", "signed_rank_interval", "verdict", "run_ab",
           "run_peer", "ABResult", "foreign_load", "finished"]

DEFAULT_WORKLOADS = ("step:two_layer_net", "step:multi_layer_net", "step:simple_convnet", "step:deep_convnet",
                     "adam:1e6", "adam:1e7")
WORKER = Path(__file__).with_name("ab_worker.py")


class ABError(RuntimeError):
    """A revision could not be built, or its benchmark process failed."""


def check_workloads(specs) -> list[str]:
    """``specs`` if each is ``step:PRESET[:BATCH]``, ``predict:PRESET[:BATCH]`` or ``OPTIMIZER:N``
    (as ``ab_worker.py`` reads them), else a ValueError naming the first that is not."""
    from .optim import OPTIMIZERS
    from .presets import PRESETS

    for spec in specs:
        kind, _, arg = spec.partition(":")
        name, _, size = arg.partition(":")
        try:
            ok = (kind in ("step", "predict") and name in PRESETS and (not size or int(size) > 0)) or (
                kind in OPTIMIZERS and not size and float(arg) >= 1)
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"workload {spec!r}: expected step:PRESET[:BATCH], predict:PRESET[:BATCH] (PRESET one "
                             f"of {sorted(PRESETS)}) or OPTIMIZER:N (OPTIMIZER one of {sorted(OPTIMIZERS)}, N "
                             f"elements, e.g. adam:1e6)")
    return list(specs)


# -- statistics -----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _signed_rank_cdf(n: int) -> tuple[float, ...]:
    """P(T+ <= k) for k = 0..n(n+1)/2, T+ the Wilcoxon signed-rank statistic of n pairs (exact)."""
    top = n * (n + 1) // 2
    counts = [1] + [0] * top
    for r in range(1, n + 1):  # subsets of {1..n} by their sum
        for s in range(top, r - 1, -1):
            counts[s] += counts[s - r]
    total, acc, cdf = 2 ** n, 0, []
    for c in counts:
        acc += c
        cdf.append(acc / total)
    return tuple(cdf)


def _walsh_averages(x: list[float]) -> list[float]:
    return sorted((x[i] + x[j]) / 2 for i in range(len(x)) for j in range(i, len(x)))


def hodges_lehmann(x: list[float]) -> float:
    """The median of the Walsh averages (the pairwise means, each value with itself included)."""
    return statistics.median(_walsh_averages(x))


def signed_rank_interval(x: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """The distribution-free confidence interval of the centre of ``x`` (Hollander & Wolfe): the
    C-th smallest and largest Walsh averages, C from the exact signed-rank distribution. With too
    few values for ``confidence`` (fewer than 6 at 95%) it is unbounded: no verdict."""
    w, n = _walsh_averages(x), len(x)
    cdf = _signed_rank_cdf(n)
    alpha = (1 - confidence) / 2
    if cdf[0] > alpha:  # even the whole range of the averages is not that sure
        return -math.inf, math.inf
    c = 1
    while c < len(w) // 2 and cdf[c] <= alpha:  # P(T+ <= c) <= alpha: cut one more from each end
        c += 1
    return w[c - 1], w[len(w) - c]


def verdict(low: float, high: float, threshold: float) -> str:
    """``regression`` when even the interval's lower bound is slower than 1 + threshold,
    ``improvement`` when its upper bound is faster than 1 / (1 + threshold); ``slower`` or
    ``faster`` when the interval excludes 1 but not the threshold (a real change, within what
    the gate accepts); else ``same`` (no change shown)."""
    if low > 1 + threshold:
        return "regression"
    if high < 1 / (1 + threshold):
        return "improvement"
    if low > 1:
        return "slower"
    if high < 1:
        return "faster"
    return "same"


# -- load from other processes -----------------------------------------------------------------

def _busy_seconds() -> float | None:
    """CPU seconds all processes have run since boot (``/proc/stat``), None where unreadable."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in (fields + ["0"] * 8)[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    """CPU seconds of this process and its children that have been waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def foreign_load(fn):
    """Run ``fn()``; returns (its result, the fraction of the machine's CPU time that processes
    other than this one and its children took meanwhile; None where unknown)."""
    busy0, own0, t0 = _busy_seconds(), _own_cpu(), time.perf_counter()
    result = fn()
    busy1, own1, wall = _busy_seconds(), _own_cpu(), time.perf_counter() - t0
    if busy0 is None or busy1 is None or wall <= 0:
        return result, None
    foreign = max(0.0, (busy1 - busy0) - (own1 - own0))
    return result, foreign / (wall * (os.cpu_count() or 1))


# -- building revisions ---------------------------------------------------------------------------

def _git(repo: Path, *args, **kw) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, **kw).stdout


def resolve(repo: Path, rev: str) -> str:
    """The full commit hash of ``rev``; a clear error when it is not a commit of ``repo``."""
    try:
        return _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").strip()
    except subprocess.CalledProcessError:
        raise ValueError(f"{rev!r} is not a commit of the repository at {repo}") from None


def _pip_install(src: Path, site: Path) -> None:
    # without network a build needs setuptools installed here; else pip fetches it
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *isolation, "--target",
                           str(site), str(src)], capture_output=True, text=True)
    if done.returncode != 0:
        raise ABError(f"building {src} failed: {done.stderr.strip()[-2000:]}")


def _tree_files(repo: Path) -> list[str]:
    return [f for f in _git(repo, "ls-files", "-co", "--exclude-standard", "-z").split("\0") if f]


def build(repo: Path, rev: str | None, cache: Path) -> tuple[Path, str]:
    """Install ``rev`` (None: the working tree) of ``repo`` into a directory of its own, for
    ``PYTHONPATH``: (that directory, a label). Commits are cached by hash (compiled kernels too);
    the working tree by the hash of its files."""
    if rev is None:
        files = _tree_files(repo)
        h = hashlib.sha256()
        for f in files:
            p = repo / f
            if p.is_file():
                h.update(f.encode() + b"\0" + p.read_bytes())
        key, label = "tree-" + h.hexdigest()[:16], "working tree"
    else:
        sha = resolve(repo, rev)
        key, label = sha, f"{rev} ({sha[:10]})" if rev != sha else sha[:10]
    site = cache / key
    if (site / "accelnet" / "__init__.py").exists():
        return site, label
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        if rev is None:
            for f in files:
                if (repo / f).is_file():
                    (src / f).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(repo / f, src / f)
        else:
            archive = subprocess.run(["git", "-C", str(repo), "archive", key], check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
        partial = cache / (key + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        _pip_install(src, partial)
        shutil.rmtree(site, ignore_errors=True)
        partial.rename(site)
    return site, label


# -- running ---------------------------------------------------------------------------------------

class _Worker:
    """One side's benchmark process (``ab_worker.py``) in an empty directory: a revision's, with
    its package first on ``PYTHONPATH`` so nothing else shadows it, or (``site`` None) the
    accelnet this process runs."""

    def __init__(self, site: Path | None, device: str, workloads):
        if site is None:
            import accelnet

            env, site = dict(os.environ), Path(accelnet.__file__).parent
        else:
            env = dict(os.environ, PYTHONPATH=str(site) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        code = (f"import runpy, sys; sys.argv = [{str(WORKER)!r}] + sys.argv[1:]; "
                f"runpy.run_path({str(WORKER)!r}, run_name='__main__')")
        self.site, self.cwd = site, tempfile.TemporaryDirectory()
        self.stderr = open(os.path.join(self.cwd.name, "stderr"), "w+")
        self.proc = subprocess.Popen([sys.executable, "-c", code, device, *workloads], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env, cwd=self.cwd.name)

    def _reply(self):
        line = self.proc.stdout.readline()
        if not line:
            self.stderr.seek(0)
            raise ABError(f"the benchmark process of {self.site} failed: {self.stderr.read().strip()[-2000:]}")
        return json.loads(line)

    def ready(self) -> dict:
        info = self._reply()
        if not info["accelnet"].startswith(str(self.site)):
            raise ABError(f"the benchmark process imported accelnet from {info['accelnet']}, not from {self.site}")
        self.info = info
        return info

    def cpu_seconds(self) -> float | None:
        """CPU time all of this process's threads have run (``/proc``'s schedstat), None where
        unreadable."""
        total = 0
        try:
            for task in os.listdir(f"/proc/{self.proc.pid}/task"):
                with open(f"/proc/{self.proc.pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return total / 1e9

    def time(self, i: int, n: int, warm: int = 0) -> list[float]:
        self.proc.stdin.write(f"{i} {n} {warm}\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.stderr.close()
            self.cwd.cleanup()


def _wait_idle(worker: _Worker, poll_s: float = 0.002, quiet_s: float = 0.0002, limit_s: float = 0.25) -> None:
    """Wait until ``worker``'s threads have stopped running: an OpenMP pool spins for a while
    after its last call (PyTorch's for ~10 ms), which would take a core from the other side's
    next burst. Done once less than ``quiet_s`` of CPU ran in ``poll_s``, or after ``limit_s``
    (a fixed pause where ``/proc`` is unreadable)."""
    end, before = time.perf_counter() + limit_s, worker.cpu_seconds()
    if before is None:
        time.sleep(0.02)
        return
    while time.perf_counter() < end:
        time.sleep(poll_s)
        now = worker.cpu_seconds()
        if now is None or now - before < quiet_s:
            return
        before = now


def _round(sides: dict, order: tuple, device: str, workloads: list, min_time: float, errors: dict,
           burst_s: float = 0.05, warm: int = 0, workers: dict | None = None) -> dict:
    """One round: a fresh process per side (``sides``: side -> (site, its specs, one per workload
    in ``workloads``); or ``workers``, started and ready, kept open), then, workload by workload,
    bursts of about ``burst_s`` seconds alternating between the sides (ABBA) until each side has
    ``min_time`` seconds of calls; each side's sample is the lower quartile of its calls.
    ``warm``: untimed calls that start each burst."""
    own = workers is None
    if own:
        workers = {side: _Worker(sides[side][0], device, sides[side][1]) for side in order}
    try:
        if own:
            for w in workers.values():
                w.ready()
        samples = {side: {} for side in order}
        for i, name in enumerate(workloads):
            spec = {side: sides[side][1][i] for side in order}
            failed = {side: workers[side].info["errors"][spec[side]] for side in order
                      if spec[side] in workers[side].info["errors"]}
            if failed:
                errors.update({name: "; ".join(f"{side}: {msg}" for side, msg in failed.items())})
                continue
            per_call = max(workers[side].info["per_call"][spec[side]] for side in order)
            n = max(1, int(burst_s / per_call))
            times = {side: [] for side in order}
            last = None
            for k in range(max(4, math.ceil(min_time / (n * per_call)))):
                for side in (order if k % 2 == 0 else order[::-1]):
                    if last is not None and last != side:
                        _wait_idle(workers[last])
                    times[side] += workers[side].time(i, n, warm)
                    last = side
            for side in order:
                t = sorted(times[side])
                samples[side][name] = t[len(t) // 4]  # other work on the machine only ever adds time
        return samples
    finally:
        if own:
            for w in workers.values():
                w.close()


@dataclass
class ABResult:
    """Every sample of an A/B run and its verdicts."""

    base: str
    head: str
    workloads: list
    threshold: float
    rounds: list = field(default_factory=list)  # {"base": {workload: s}, "head": {...}, "load": f, "quiet": bool}
    noisy_retries: int = 0
    seconds: float = 0.0
    errors: dict = field(default_factory=dict)

    def ratios(self, workload: str) -> list[float]:
        return [r["head"][workload] / r["base"][workload] for r in self.rounds
                if workload in r["head"] and workload in r["base"]]

    def summary(self, workload: str) -> dict:
        ratios = self.ratios(workload)
        if not ratios:
            return {"workload": workload, "verdict": "error", "error": self.errors.get(workload, "no samples")}
        logs = [math.log(r) for r in ratios]
        lo, hi = signed_rank_interval(logs)
        est, lo, hi = math.exp(hodges_lehmann(logs)), math.exp(lo), math.exp(hi)
        base = statistics.median(r["base"][workload] for r in self.rounds if workload in r["base"])
        head = statistics.median(r["head"][workload] for r in self.rounds if workload in r["head"])
        return {"workload": workload, "base_median_s": base, "head_median_s": head, "ratio": est, "ci_low": lo,
                "ci_high": hi, "rounds": len(ratios), "verdict": verdict(lo, hi, self.threshold)}

    def summaries(self) -> list[dict]:
        return [self.summary(w) for w in self.workloads]

    @property
    def regressions(self) -> list[str]:
        return [s["workload"] for s in self.summaries() if s["verdict"] == "regression"]

    @property
    def quiet_rounds(self) -> int:
        return sum(1 for r in self.rounds if r["quiet"])

    def markdown(self) -> str:
        rows = [f"A/B: **{self.head}** against **{self.base}**, {len(self.rounds)} rounds ({self.quiet_rounds} quiet, "
                f"{self.noisy_retries} repeated for foreign load), {self.seconds:.0f} s; regression when the 95% "
                f"interval of HEAD/BASE lies above {1 + self.threshold:.2f}", "",
                "| workload | BASE median | HEAD median | HEAD/BASE | 95% interval | verdict |",
                "| --- | ---: | ---: | ---: | --- | --- |"]
        for s in self.summaries():
            if s["verdict"] == "error":
                rows.append(f"| {s['workload']} | | | | | error: {s['error']} |")
                continue
            rows.append(f"| {s['workload']} | {_ms(s['base_median_s'])} | {_ms(s['head_median_s'])} | "
                        f"{s['ratio']:.3f} | {_interval(s)} | "
                        f"{'**' + s['verdict'] + '**' if s['verdict'] in ('regression', 'improvement') else s['verdict']} |")
        return "\n".join(rows) + "\n"

    def to_json(self) -> dict:
        return {"base": self.base, "head": self.head, "threshold": self.threshold, "workloads": self.workloads,
                "summaries": [{k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in s.items()}
                              for s in self.summaries()], "rounds": self.rounds, "noisy_retries": self.noisy_retries,
                "seconds": self.seconds, "errors": self.errors, "machine": machine_info()}

    def pytest_benchmark_json(self, side: str) -> dict:
        """One side in pytest-benchmark's JSON format (``pytest-benchmark compare`` reads it): each
        workload's per-round medians as its rounds."""
        benches = []
        for w in self.workloads:
            data = [r[side][w] for r in self.rounds if w in r[side]]
            if not data:
                continue
            s = sorted(data)
            q1, q3 = s[len(s) // 4], s[(3 * len(s)) // 4]
            benches.append({"group": "ab", "name": w, "fullname": f"ab::{w}", "params": None, "param": None,
                            "extra_info": {"revision": getattr(self, side)}, "options": {},
                            "stats": {"min": s[0], "max": s[-1], "mean": statistics.fmean(s),
                                      "stddev": statistics.stdev(s) if len(s) > 1 else 0.0, "rounds": len(s),
                                      "median": statistics.median(s), "iqr": q3 - q1, "q1": q1, "q3": q3,
                                      "iqr_outliers": 0, "stddev_outliers": 0, "outliers": "0;0",
                                      "ld15iqr": s[0], "hd15iqr": s[-1], "ops": 1 / statistics.fmean(s),
                                      "total": sum(s), "data": data, "iterations": 1}})
        return {"machine_info": machine_info(), "commit_info": {"id": getattr(self, side)}, "benchmarks": benches,
                "datetime": datetime.datetime.now(datetime.timezone.utc).isoformat(), "version": "4.0.0"}


def _interval(s: dict) -> str:
    if not math.isfinite(s["ci_high"]):
        return "none: fewer than 6 rounds"
    return f"{s['ci_low']:.3f}-{s['ci_high']:.3f}"


def _ms(s: float) -> str:
    return f"{s * 1e3:.3f} ms" if s < 1 else f"{s:.2f} s"


def machine_info() -> dict:
    import numpy

    info = {"node": platform.node(), "machine": platform.machine(), "processor": platform.processor(),
            "python_version": platform.python_version(), "python_implementation": platform.python_implementation(),
            "system": platform.system(), "release": platform.release(), "cpus": os.cpu_count(),
            "numpy": numpy.__version__}
    try:
        import numba

        info["numba"] = numba.__version__
    except ImportError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return info


def run_ab(base_site: Path, head_site: Path, base: str, head: str, workloads=DEFAULT_WORKLOADS, device: str = "cpu",
           min_time: float = 0.5, min_rounds: int = 8, max_rounds: int = 20, threshold: float = 0.05,
           quiet_load: float = 0.05, retries: int = 2, budget_s: float | None = None, log=None) -> ABResult:
    """Time both revisions, a fresh process each per round, in alternating bursts (:func:`_round`),
    after a discarded warm-up round; rounds during which other processes used more than
    ``quiet_load`` of the machine are repeated (up to ``retries`` times each). Stops after
    ``max_rounds``, after ``budget_s`` seconds, or, from ``min_rounds`` on, once every workload's
    verdict is decided (its interval clear of the threshold on both sides)."""
    workloads = list(workloads)
    result = ABResult(base, head, workloads, threshold)
    sides = {"base": (base_site, workloads), "head": (head_site, workloads)}
    start = time.perf_counter()
    for site, specs in sides.values():  # warm-up: compiles each side's kernels into its cache; not counted
        w = _Worker(site, device, specs)
        try:
            w.ready()
        finally:
            w.close()
    while len(result.rounds) < max_rounds:
        order = ("base", "head") if len(result.rounds) % 2 == 0 else ("head", "base")
        for attempt in range(retries + 1):
            samples, load = foreign_load(lambda: _round(sides, order, device, workloads, min_time, result.errors))
            quiet = load is not None and load <= quiet_load
            if quiet or attempt == retries:
                break
            result.noisy_retries += 1
        result.rounds.append({**samples, "load": load, "quiet": quiet,
                              "seconds": time.perf_counter() - start - result.seconds})
        result.seconds = time.perf_counter() - start
        if log:
            log(f"round {len(result.rounds)}: " + ", ".join(
                f"{w} {samples['head'][w] / samples['base'][w]:.3f}" for w in workloads
                if w in samples["head"] and w in samples["base"]) + f" (foreign load {load or 0:.0%})")
        if finished(result, min_rounds, max_rounds, budget_s):
            break
    return result


def run_peer(workloads, device: str = "cpu", min_time: float = 0.5, rounds: int = 6, quiet_load: float = 0.05,
             retries: int = 1, log=None) -> ABResult:
    """accelnet (HEAD, the accelnet this process runs) against PyTorch eager (BASE) on the same
    ``step:``/``predict:`` workloads, interleaved as :func:`run_ab` times two revisions, for
    ``rounds`` rounds: each ratio accelnet / PyTorch then has a 95% interval, and the machine's
    drift hits both alike. Each workload gets a process per side of its own, kept for its rounds,
    as a user's training script would run it: a process that built bigger workloads first has a
    raised glibc mmap threshold, which spares PyTorch the page faults of its fresh tensors
    (README, "Against PyTorch"). PyTorch never shares an OpenMP runtime with Numba; where it
    cannot run, ``errors`` says why."""
    workloads = list(workloads)
    result = ABResult("PyTorch eager", "accelnet", workloads, threshold=0.0)
    result.rounds = [{"base": {}, "head": {}, "load": 0.0, "quiet": True} for _ in range(rounds)]
    start = time.perf_counter()
    for name in workloads:
        sides = {"base": (None, [f"peer:{name}"]), "head": (None, [name])}
        workers = {side: _Worker(site, device, specs) for side, (site, specs) in sides.items()}
        try:
            for w in workers.values():
                w.ready()
            for r in range(rounds):
                order = ("base", "head") if r % 2 == 0 else ("head", "base")
                for attempt in range(retries + 1):
                    # the two processes evict each other's caches: each burst starts with an untimed
                    # call, as a training loop's steps follow one another
                    samples, load = foreign_load(lambda: _round(sides, order, device, [name], min_time, result.errors,
                                                                burst_s=0.1, warm=1, workers=workers))
                    quiet = load is not None and load <= quiet_load
                    if quiet or attempt == retries:
                        break
                    result.noisy_retries += 1
                row = result.rounds[r]
                for side in ("base", "head"):
                    row[side].update(samples[side])
                row["load"] = max(row["load"], load or 0.0)
                row["quiet"] = row["quiet"] and quiet
            if log and name in result.rounds[0]["head"]:
                log(f"{name}: " + ", ".join(f"{r['head'][name] / r['base'][name]:.3f}" for r in result.rounds))
        finally:
            for w in workers.values():
                w.close()
    result.seconds = time.perf_counter() - start
    return result



def finished(result: ABResult, min_rounds: int, max_rounds: int, budget_s: float | None) -> bool:
    """The stopping rule: ``max_rounds`` rounds, or ``budget_s`` seconds spent, or, from
    ``min_rounds`` on, every workload decided (its interval clear of the threshold on both sides).
    ``bench/ab_false_alarms.py`` replays recorded rounds through it."""
    if len(result.rounds) >= max_rounds or (budget_s is not None and result.seconds > budget_s):
        return True
    return len(result.rounds) >= min_rounds and all(_decided(s, result.threshold) for s in result.summaries())


def _decided(summary: dict, threshold: float) -> bool:
    if summary["verdict"] == "error":
        return True
    lo, hi = summary["ci_low"], summary["ci_high"]
    up, down = 1 + threshold, 1 / (1 + threshold)
    return not (lo <= up <= hi) and not (lo <= down <= hi)
