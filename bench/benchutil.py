"""Shared helpers of the pytest-benchmark suite: `pytest bench --benchmark-enable` times; plain `pytest` runs each once.
The backend axis (``backend_name``) is the repository's conftest.py."""


def run(benchmark, workload):
    """Time ``workload`` (device-synchronized calls) and record its effective bandwidth."""
    benchmark.group = workload.group
    benchmark.extra_info.update({k: str(v) for k, v in workload.info.items()})
    benchmark.extra_info["bytes"] = workload.nbytes
    benchmark(workload)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and workload.nbytes:
        benchmark.extra_info["GB/s"] = round(workload.nbytes / stats.stats.median / 1e9, 2)
