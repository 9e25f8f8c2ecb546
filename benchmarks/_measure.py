"""Time and peak memory of one workload, each in a fresh subprocess (Linux: /proc/self peak RSS)."""

import json
import subprocess
import sys
import time


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def measure(run, repeats: int = 1, cuda: bool = False) -> dict:
    """Seconds per call (best of `repeats`) and the peak memory the call added, in MiB: resident
    memory, or with `cuda` the GPU's (the clock stops once the GPU has finished)."""
    if cuda:
        import torch
    best = float("inf")
    peak = 0.0
    for _ in range(repeats):
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # resets the peak RSS counter
        before = _rss_kib("VmRSS")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            before_gpu = torch.cuda.memory_allocated()
        start = time.perf_counter()
        run()
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
        added = (torch.cuda.max_memory_allocated() - before_gpu) / 2**20 if cuda else (_rss_kib("VmHWM") - before) / 1024
        peak = max(peak, added)
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
