"""Run the scale-out rehearsal (see the package docstring); its last line is the summary."""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import psutil
import yaml

from perf import processes, triton_metrics
from perf.tables import markdown_table
from rtmo_triton import spec
from rtmo_triton.serve.local import TritonServer, exit_on_sigterm, free_port
from rtmo_triton.whole_files import write_whole

from .balancer import HAProxy, Replica

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "perf" / "locustfile.py"
LOCUST = ROOT / ".tools" / "bin" / "locust"
SHM_PREFIX = "triton_python_backend_shm_region_"
SCALED_OBJECT = ROOT / "deploy" / "k8s" / "base" / "scaledobject.yaml"
DEPLOYMENT = ROOT / "deploy" / "k8s" / "base" / "deployment.yaml"


class Timeline:
    """Events of the run, stamped in wall-clock seconds (locust's timeline uses the same clock)."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str]] = []

    def __call__(self, what: str) -> None:
        self.events.append((time.time(), what))
        print(f"[rehearse] {time.strftime('%H:%M:%S')} {what}", flush=True)


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - start


class Locust:
    """A headless locust run through the balancer, stopped by SIGTERM (it then writes its summary)."""

    def __init__(self, *, users: int, http_port: int, grpc_port: int, summary: Path, log: Path) -> None:
        env = dict(os.environ, RTMO_GRPC_URL=f"127.0.0.1:{grpc_port}", RTMO_LOCUST_SUMMARY=str(summary),
                   PYTHONPATH=str(ROOT))  # the locustfile imports perf and rtmo_triton from here
        self.summary, self.log = summary, log
        summary.unlink(missing_ok=True)
        self.started = time.time()
        self.seconds = float("nan")
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [str(LOCUST), "-f", str(LOCUSTFILE), "--headless", "--only-summary",
                 "-H", f"http://127.0.0.1:{http_port}", "-u", str(users), "-r", str(users),
                 "--run-time", "30m", "--stop-timeout", "0", "--loglevel", "WARNING"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    def terminate(self) -> None:
        """For an interrupted rehearsal: no locust left behind."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> dict:
        """Stop the users; img/s counts the whole run, requests cut short by the stop excluded."""
        self.seconds = time.time() - self.started
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:  # seen: the summary written, then no exit (gRPC's threads)
            self.terminate()
        if not self.summary.exists():
            raise RuntimeError(f"locust wrote no summary:\n{self.log.read_text()[-3000:]}")
        return json.loads(self.summary.read_text())


def deployment_flags() -> list[str]:
    """The Kubernetes Deployment's server flags but its repository: the replicas run with them.

    rtmo-serve's own flags there (``--exit-timeout-secs``) are tritonserver's under the same name;
    the ones after ``--`` are tritonserver's.
    """
    [container] = yaml.safe_load(DEPLOYMENT.read_text())["spec"]["template"]["spec"]["containers"]
    return [a for a in container["args"] if not a.startswith("--model-repository") and a != "--"]


def autoscaler_query() -> tuple[str, list[tuple[str, str]], float]:
    """The ScaledObject's PromQL, its (metric, model regex) selectors in order, and its threshold."""
    [trigger] = yaml.safe_load(SCALED_OBJECT.read_text())["spec"]["triggers"]
    query = trigger["metadata"]["query"]
    selectors = [(name, re.search(r'model=~?"([^"]+)"', labels).group(1))
                 for name, labels in re.findall(r"(nv_\w+)\{([^}]*)\}", query)]
    return query, selectors, float(trigger["metadata"]["threshold"])


def counters(replicas: list[TritonServer], selectors: list[tuple[str, str]]) -> list[float]:
    """Each selector's counter summed over the replicas, read from their /metrics."""
    texts = [triton_metrics.scrape(replica.metrics_url, timeout_s=5) for replica in replicas]
    return [sum(sum(triton_metrics.by_model(text, [name], model=model).values()) for text in texts)
            for name, model in selectors]


def phase_figures(locust: Locust, name: str, replicas: int, users: int) -> dict:
    summary = locust.stop()
    total = summary["total"]
    if not total["requests"]:
        raise RuntimeError(f"{name}: locust sent no request; see {locust.log}")
    ok = total["requests"] - total["failures"]
    return {"phase": name, "replicas": replicas, "users": users, "seconds": round(locust.seconds, 1),
            "ok": ok, "failed": total["failures"], "img_s": ok / locust.seconds, "p50_ms": total["p50_ms"],
            "p99_ms": total["p99_ms"], "by_protocol": summary["by_protocol"], "errors": summary["errors"],
            "timeline": summary["timeline"]}


def stop(server: TritonServer, *, kill: bool = False) -> int:
    """Stop a replica as its container would go: SIGTERM (or SIGKILL) to the server, and whatever of
    its process tree outlives it killed, shared memory included. Returns the processes left behind."""
    if server.process is None:  # never started
        return 0
    tree = processes.tree(server.process.pid)[1:]
    regions = [Path("/dev/shm") / a for p in tree for a in p.cmdline() if a.startswith(SHM_PREFIX)]
    if kill:
        server.process.kill()
        server.process.wait()
    else:
        server.stop()
    survivors = []
    for p in tree:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                p.kill()
                survivors.append(p)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(survivors, timeout=10)
    for region in regions:  # a clean shutdown unlinks them; a killed server cannot
        region.unlink(missing_ok=True)
    return len(survivors)


def restart(replica: TritonServer, log: Path) -> None:
    replica.log_path = log  # keep the previous run's log
    replica.start()  # same ports: the balancer's server entry stays valid


def rehearse(args: argparse.Namespace) -> dict:
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    note = Timeline()
    names = [f"r{i}" for i in range(args.replicas)]
    flags = deployment_flags()
    exit_timeout_s = float(next(f for f in flags if f.startswith("--exit-timeout-secs=")).split("=")[1])
    servers = [TritonServer(args.model_repository, log_path=work / f"{n}.0.log", extra_args=flags)
               for n in names]
    starts = {n: 0 for n in names}
    load_start = os.getloadavg()[0]
    ports = {"http": free_port(), "grpc": free_port()}
    with ExitStack() as stack:
        for name, server in zip(names, servers):
            stack.callback(stop, server)  # before start: a replica interrupted while starting is stopped too
            server.start()
            note(f"{name} ready in {server.start_seconds:.1f} s "
                 f"(HTTP {server.http_url}, gRPC {server.grpc_url})")
        replicas = [Replica(n, s.ports["http"], s.ports["grpc"]) for n, s in zip(names, servers)]
        balancer = stack.enter_context(HAProxy(work, http_port=ports["http"], grpc_port=ports["grpc"],
                                               replicas=replicas))
        wait_until(lambda: all(balancer.is_up(n) for n in names), 30, "replicas up in HAProxy")
        note(f"HAProxy up: HTTP 127.0.0.1:{ports['http']}, gRPC 127.0.0.1:{ports['grpc']}")

        def run_locust(tag: str, users: int) -> Locust:
            locust = Locust(users=users, http_port=ports["http"], grpc_port=ports["grpc"],
                            summary=work / f"locust-{tag}.json", log=work / f"locust-{tag}.log")
            stack.callback(locust.terminate)
            return locust

        # 1. one replica alone: the per-replica figure capacity planning starts from
        for name in names[1:]:
            balancer.set_state(name, "maint")
        query, selectors, threshold = autoscaler_query()
        if len(selectors) != 2:
            raise ValueError(f"expected a ratio of two Triton counters in {SCALED_OBJECT}: {query}")
        before = counters(servers[:1], selectors)
        note(f"baseline: {args.baseline_users} users on {names[0]} alone for {args.baseline_s:.0f} s")
        locust = run_locust("baseline", args.baseline_users)
        time.sleep(args.baseline_s)
        baseline = phase_figures(locust, "1 replica", 1, args.baseline_users)
        after = counters(servers[:1], selectors)
        if after[1] <= before[1] or after[0] <= before[0]:
            raise RuntimeError(f"the autoscaler's counters did not move under load: {selectors}")
        baseline["autoscaler_metric"] = {"query": query, "threshold": threshold,
                                         "value": (after[0] - before[0]) / (after[1] - before[1])}
        for name in names[1:]:
            balancer.set_state(name, "ready")
        wait_until(lambda: all(balancer.is_up(n) for n in names), 30, "replicas back in HAProxy")

        # 2. all replicas, one killed, then a rolling restart
        retries_before = balancer.retries()
        note(f"main run: {args.users} users on {args.replicas} replicas")
        locust = run_locust("main", args.users)
        time.sleep(args.settle_s)
        victim, server = names[0], servers[0]
        left = stop(server, kill=True)
        note(f"{victim} killed (SIGKILL), its {left} Python stubs with it as a container's death takes them")
        time.sleep(args.down_s)  # what a crash-looping pod's restart back-off would leave
        starts[victim] += 1
        restart(server, work / f"{victim}.{starts[victim]}.log")
        back = wait_until(lambda: balancer.is_up(victim), 30, f"{victim} back in HAProxy")
        note(f"{victim} restarted: ready in {server.start_seconds:.1f} s, in HAProxy {back:.1f} s later")
        time.sleep(args.settle_s)
        for name, server in zip(names, servers):
            balancer.set_state(name, "drain")
            drained = wait_until(lambda n=name: balancer.in_flight(n) == 0, exit_timeout_s, f"{name} drained")
            note(f"{name} out of the balancer, in-flight requests done in {drained:.1f} s; SIGTERM")
            if left := stop(server):
                note(f"{name}: {left} of its stubs outlived the server (killed)")
            starts[name] += 1
            restart(server, work / f"{name}.{starts[name]}.log")
            wait_until(lambda n=name: balancer.is_up(n), 30, f"{name} up in HAProxy")
            balancer.set_state(name, "ready")
            note(f"{name} restarted (ready in {server.start_seconds:.1f} s) and back in the balancer")
            time.sleep(args.between_s)
        time.sleep(args.settle_s)
        main = phase_figures(locust, f"{args.replicas} replicas, kill + rolling restart", args.replicas,
                             args.users)
        retries_after = balancer.retries()
        main["balancer_retries"] = {k: retries_after[k] - retries_before.get(k, 0) for k in retries_after}
        main["start_s"] = locust.started
    version = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    return {"baseline": baseline, "main": main, "events": note.events, "replicas": args.replicas,
            "haproxy": version, "load_average": [load_start, os.getloadavg()[0]], "flags": flags}


def report_markdown(result: dict, args: argparse.Namespace) -> str:
    base, main = result["baseline"], result["main"]
    t0 = main["start_s"]
    rows = markdown_table(
        ("phase", "users", "s", "ok", "failed", "img/s", "p50 ms", "p99 ms"),
        [(p["phase"], p["users"], f"{p['seconds']:.0f}", p["ok"], p["failed"], f"{p['img_s']:.2f}",
          f"{p['p50_ms']:.0f}", f"{p['p99_ms']:.0f}") for p in (base, main)])
    protocols = markdown_table(
        ("phase", "protocol", "ok", "failed", "p50 ms", "p99 ms"),
        [(p["phase"], proto, s["requests"] - s["failures"], s["failures"], f"{s['p50_ms']:.0f}",
          f"{s['p99_ms']:.0f}") for p in (base, main) for proto, s in p["by_protocol"].items()])
    events = markdown_table(("t s", "event"), [(f"{t - t0:+.1f}", what) for t, what in result["events"]
                                                if t >= t0 - 1])
    failed_seconds = ", ".join(f"{f} at {s - t0:+.0f} s" for s, _, f in main["timeline"] if f) or "none"
    errors = "\n".join(f"- {n} × {msg}" for msg, n in {**base["errors"], **main["errors"]}.items()) or "none"
    retries = ", ".join(f"{k} {v}" for k, v in main["balancer_retries"].items())
    metric = base["autoscaler_metric"]
    load = result["load_average"]
    return f"""# Scale-out rehearsal (`make rehearse-scale`)

{result['replicas']} tritonserver replicas of `{args.model_repository}` on loopback, with the Kubernetes
Deployment's flags (`{' '.join(result['flags'])}`), behind {result['haproxy'].split(' - ')[0]}: HTTP and
gRPC listeners, least connections, health from `/v2/models/{spec.ENSEMBLE_NAME}/ready`, layer-7
retries. Load from locust (`perf/locustfile.py`): HTTP and gRPC users in equal numbers,
one JPEG per request from the benchmark sizes, sent by our client (its retries on), every response
checked against the ensemble's contract.

The machine has {os.cpu_count()} cores, shared by every replica, HAProxy, locust and whatever else ran
(1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at the end): more replicas here cannot add
throughput. The per-replica figure is the first row, at the main run's load per replica.

{rows}

{protocols}

Main run, seconds from its start:

{events}

Failed requests by second: {failed_seconds}. Errors: {errors}

HAProxy during the main run (`wretr`: requests retried, `wredis`: redispatched to another
replica): {retries}.

The autoscaler's query (`deploy/k8s/base/scaledobject.yaml`) evaluated on the replica's counters
over the first row: {metric['value'] / 1e3:.1f} ms queued per request against a threshold of
{metric['threshold'] / 1e3:.0f} ms, so KEDA would want ceil(1 × {metric['value'] / metric['threshold']:.2f}) =
{math.ceil(metric['value'] / metric['threshold'])} replica(s).
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-repository", type=Path, default=ROOT / spec.DEFAULT_REPOSITORY)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--users", type=int, help="locust users, half HTTP, half gRPC (2 per replica)")
    parser.add_argument("--baseline-users", type=int, default=2,
                        help="users on one replica alone: the same load per replica as the main run's")
    parser.add_argument("--baseline-s", type=float, default=60.0, help="one replica alone, seconds")
    parser.add_argument("--settle-s", type=float, default=15.0, help="steady load before and after events")
    parser.add_argument("--down-s", type=float, default=3.0, help="seconds the killed replica stays down")
    parser.add_argument("--between-s", type=float, default=5.0, help="pause between rolling restarts")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "out" / "rehearse-scale",
                        help="logs, HAProxy config and locust output")
    parser.add_argument("--report-dir", type=Path, default=ROOT / "reports" / "scale")
    args = parser.parse_args(argv)
    args.users = args.users or 2 * args.replicas
    if not (args.model_repository / spec.ENSEMBLE_NAME / "config.pbtxt").exists():
        parser.error(f"{args.model_repository} has no built `{spec.ENSEMBLE_NAME}`: run `make build-engines`")
    if not LOCUST.exists():
        parser.error(f"{LOCUST} missing: run `make setup-dev`")
    exit_on_sigterm()
    result = rehearse(args)
    args.report_dir.mkdir(parents=True, exist_ok=True)
    write_whole(args.report_dir / "rehearsal.json", json.dumps(result, indent=1, default=str))
    write_whole(args.report_dir / "rehearsal.md", report_markdown(result, args))
    base, run = result["baseline"], result["main"]
    print(f"report: {args.report_dir / 'rehearsal.md'}")
    print(f"scale rehearsal: {run['ok']} ok, {run['failed']} failed, {args.replicas} replicas, "
          f"{run['img_s']:.2f} img/s (1 replica: {base['img_s']:.2f})")
    return 0 if run["failed"] == 0 and not math.isnan(run["img_s"]) else 1


if __name__ == "__main__":
    sys.exit(main())
