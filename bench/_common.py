"""What the memory benchmarks share: peak RSS, a phase in a fresh process, the result table."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys


def peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_phase(script: str, phase: str, args: list[str]) -> dict:
    """Runs ``script --phase phase *args`` in a fresh process; returns its last line's JSON."""
    cmd = [sys.executable, script, "--phase", phase, *args]
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"{phase} phase failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_table(rows: list[tuple[str, str]]) -> None:
    """Prints ``(measure, value)`` rows as the two-column table the docs quote."""
    width = max(len(name) for name, _ in rows)
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  {'-' * 40}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
