"""Start-up cost of the CLI: `clipaudit --help` and `clipaudit <task> --help` against the interpreter floor.

Each command runs in a fresh process several times, interleaved (A B C A B C ...), so drift of a shared
machine hits all of them alike; the median wall time of each is printed next to the floor measured in the
same run (`python -c pass`, and `python -c "import numpy"`: the CLI imports numpy and nothing heavier), with
the ratio. Goal (issue: the spine): `clipaudit --help` under 1 s on 2 cores; no torch import on that path
(`python -X importtime -m analysis --help` shows it). Writes benchmarks/results/bench_startup.json.

usage:
  python benchmarks/bench_startup.py             # 7 rounds
  python benchmarks/bench_startup.py --rounds 15
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "floor: python -c pass": [sys.executable, "-c", "pass"],
    "floor: import numpy": [sys.executable, "-c", "import numpy"],
    "clipaudit --help": [sys.executable, "-m", "analysis", "--help"],
    "clipaudit audit --help": [sys.executable, "-m", "analysis", "audit", "--help"],
    "clipaudit confidence --help": [sys.executable, "-m", "analysis", "confidence", "--help"],
    "import torch (for scale)": [sys.executable, "-c", "import torch"],
}


def heavy_imports() -> list[str]:
    """Heavy top-level packages imported by `python -m analysis --help` (from -X importtime)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "analysis", "--help"], capture_output=True,
                          text=True, cwd=ROOT)
    names = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    return sorted(names & {"torch", "torchvision", "sklearn", "open_clip", "pandas", "scipy"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    times: dict[str, list[float]] = {k: [] for k in COMMANDS}
    for _ in range(args.rounds + 1):  # the first round warms the file cache and is dropped
        for name, cmd in COMMANDS.items():
            t = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True, cwd=ROOT)
            times[name].append(time.perf_counter() - t)
    floor = statistics.median(times["floor: python -c pass"][1:])
    rows = {}
    for name, values in times.items():
        med = statistics.median(values[1:])
        rows[name] = {"median_s": round(med, 3), "min_s": round(min(values[1:]), 3),
                      "max_s": round(max(values[1:]), 3), "x_floor": round(med / floor, 2)}
        print(f"{name:<32} median {med:6.3f} s  (min {min(values[1:]):.3f}, max {max(values[1:]):.3f})  "
              f"{med / floor:5.1f}x python start-up")
    heavy = heavy_imports()
    ok = rows["clipaudit --help"]["median_s"] < 1.0 and "torch" not in heavy
    print(f"heavy packages imported by `clipaudit --help`: {', '.join(heavy) or 'none'}")
    print(f"goal (under 1 s, no torch): {'met' if ok else 'NOT met'}")
    out = ROOT / "benchmarks" / "results" / "bench_startup.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rounds": args.rounds, "commands": rows, "heavy_imports": heavy, "goal_met": ok},
                              indent=2) + "\n")
    print(f"written: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
