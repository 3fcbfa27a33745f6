"""Reading the CLI's stderr in tests."""

COMPILE_NOTICE = "compiling accelnet's kernels"  # the first-run notice, printed when Numba's cache lacks the kernels


def error_lines(err: str) -> list[str]:
    """stderr's non-empty lines but the first-run notice, which depends on the cache, not the test."""
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.strip() and not line.startswith(COMPILE_NOTICE)]
