"""Cold vs warm `clipaudit audit`: a warm re-run must cost a small fraction of the cold one (nothing re-encoded).

Runs the real command twice in fresh processes (so the time includes Python start-up, imports and model
loading) on the same inputs: first with an empty embedding cache, then again on the filled cache. Reads
each run's audit record for per-stage timings and the cache counters (images/texts encoded), prints them
and writes benchmarks/results/bench_audit_cache.json.

usage:
  python benchmarks/bench_audit_cache.py                                   # clipaudit-lit (else tiny-rn), bundled
  python benchmarks/bench_audit_cache.py --model clipaudit-tiny-vit --limit 300
  python benchmarks/bench_audit_cache.py -- --no-concepts                  # extra `clipaudit audit` options
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def default_model() -> str:
    lit = ROOT / "analysis" / "models" / "weights" / "clipaudit-lit" / "heads.safetensors"
    return "clipaudit-lit" if lit.is_file() else "clipaudit-tiny-rn"


def audit_once(argv: list[str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "analysis", "audit", *argv], capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if proc.returncode not in (0, 1):
        sys.exit(f"clipaudit audit failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    print(proc.stdout.strip())
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="default: clipaudit-lit when its weights exist, else tiny-rn")
    parser.add_argument("--dataset", default="bundled")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_audit_cache.json"))
    parser.add_argument("extra", nargs="*", help="more `clipaudit audit` options (after --)")
    args = parser.parse_args()
    model = args.model or default_model()
    with tempfile.TemporaryDirectory() as tmp:
        common = ["-m", model, "-d", args.dataset, "--cache-dir", f"{tmp}/cache", "--results-dir", f"{tmp}/results",
                  "--reports-dir", f"{tmp}/reports", "--name", "bench", "-q", *args.extra]
        if args.limit:
            common += ["--limit", str(args.limit)]
        runs = {}
        for label in ("cold", "warm"):
            seconds = audit_once(common)
            record_path = next((Path(tmp) / "results" / "audit" / "bench" / "audit").glob("*.json"))
            record = json.loads(record_path.read_text())
            runs[label] = {"wall_seconds": round(seconds, 2), "cache": record["cache_stats"],
                           "stage_seconds": {k.split(".", 1)[1]: v for k, v in record["metrics"].items()
                                             if k.startswith("seconds.")}}
    ratio = runs["warm"]["wall_seconds"] / runs["cold"]["wall_seconds"]
    report = {"model": model, "dataset": args.dataset, "limit": args.limit, "extra": args.extra, **runs,
              "warm_over_cold": round(ratio, 3), "python": sys.version.split()[0]}
    print(json.dumps(report, indent=2))
    print(f"warm / cold = {ratio:.2f} ({runs['warm']['wall_seconds']} s / {runs['cold']['wall_seconds']} s); "
          f"warm run encoded {runs['warm']['cache']['images_encoded']} images, "
          f"{runs['warm']['cache']['texts_encoded']} texts")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
