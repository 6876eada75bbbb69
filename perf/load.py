"""``make load``: start a server, run perf/locustfile.py's HTTP users headless against it, stop the server.

    python -m perf.load [--users 4] [--spawn-rate 2] [--duration 60s] [--out reports/load]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from rtmo_triton import spec
from rtmo_triton.serve.local import TritonServer, exit_on_sigterm

ROOT = Path(__file__).resolve().parents[1]
LOCUST = ROOT / ".tools" / "bin" / "locust"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-repository", type=Path, default=ROOT / spec.DEFAULT_REPOSITORY)
    p.add_argument("--users", type=int, default=4)
    p.add_argument("--spawn-rate", type=float, default=2)
    p.add_argument("--duration", default="60s")
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "load")
    args = p.parse_args(argv)
    exit_on_sigterm()
    if not LOCUST.exists():
        print(f"{LOCUST} missing: run `make setup-dev` (perf/install_tools.sh)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with TritonServer(args.model_repository, log_path=args.out / "tritonserver.log") as server:
        cmd = [str(LOCUST), "-f", str(ROOT / "perf" / "locustfile.py"), "HttpRtmoUser", "--headless",
               "-H", f"http://{server.http_url}", "-u", str(args.users), "-r", str(args.spawn_rate),
               "-t", args.duration, "--csv", str(args.out / "locust"),
               "--html", str(args.out / "locust.html"), "--only-summary"]
        print("$ " + " ".join(cmd), flush=True)
        # locust runs in its own venv (.tools/locust) and imports the locustfile by path: `perf` from here
        code = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}).returncode
    print(f"locust reports: {args.out}/locust_stats.csv, {args.out}/locust.html (exit {code})")
    return code


if __name__ == "__main__":
    sys.exit(main())
