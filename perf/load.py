"""``make load``: start a server, run the locustfile headless against it, stop the server.

    python perf/load.py [--users 4] [--spawn-rate 2] [--duration 60s] [--out reports/load]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rtmo_triton.serving.server import TritonServer, exit_on_sigterm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LOCUST = ROOT / ".tools" / "bin" / "locust"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-repository", type=Path, default=ROOT / "model_repository")
    p.add_argument("--users", type=int, default=4)
    p.add_argument("--spawn-rate", type=float, default=2)
    p.add_argument("--duration", default="60s")
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "load")
    args = p.parse_args(argv)
    exit_on_sigterm()
    if not LOCUST.exists():
        print(f"{LOCUST} missing: run `make setup` (perf/install_tools.sh)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with TritonServer(args.model_repository, log_path=args.out / "tritonserver.log") as server:
        cmd = [str(LOCUST), "-f", str(ROOT / "perf" / "locustfile.py"), "--headless",
               "-H", f"http://{server.http_url}", "-u", str(args.users), "-r", str(args.spawn_rate),
               "-t", args.duration, "--csv", str(args.out / "locust"),
               "--html", str(args.out / "locust.html"), "--only-summary"]
        print("$ " + " ".join(cmd), flush=True)
        code = subprocess.run(cmd).returncode
    print(f"locust reports: {args.out}/locust_stats.csv, {args.out}/locust.html (exit {code})")
    return code


if __name__ == "__main__":
    sys.exit(main())
