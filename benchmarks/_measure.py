"""Time and peak memory of one workload, each in a fresh subprocess (Linux: /proc/self peak RSS)."""

import json
import subprocess
import sys
import time


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def measure(run, repeats: int = 1) -> dict:
    """Seconds per call (best of `repeats`) and the peak resident memory the call added, in MiB."""
    best = float("inf")
    peak = 0.0
    for _ in range(repeats):
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # resets the peak RSS counter
        before = _rss_kib("VmRSS")
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
        peak = max(peak, (_rss_kib("VmHWM") - before) / 1024)
    return {"seconds": best, "peak_mib": peak}


def in_subprocess(script: str, *arguments: str, timeout: float = 1800) -> dict | None:
    """Runs `python script arguments…`, which prints one JSON line; None when it fails or times out."""
    try:
        result = subprocess.run(
            [sys.executable, script, *arguments], capture_output=True, text=True, timeout=timeout, check=True
        )
    except subprocess.TimeoutExpired:
        return {"timeout": timeout}
    except subprocess.CalledProcessError as error:
        return {"error": error.stderr.strip().splitlines()[-1] if error.stderr.strip() else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])
