"""The pacer's own cost: CPU (% of one core) and RSS of `dnscache-agent pacer` forwarding
1000 upstream packets/s, with the prototype (`bench/pacer.py`, a 1 ms tick) and a bare
Python UDP responder measured in the same run as baselines.

  sudo python3 -m bench.pacer_cost [--qps 1000] [--seconds 20] [--out FILE]

Everything runs in a private network namespace (`ip netns`, removed at the end): a responder
on 127.0.0.2:53 answers every query at once (it stands in for the Amazon resolver, so
the figures are the pacer's alone; `responder` reports its cost as a floor: a bare Python
socket loop at the same rate), `bench/loadgen.py` offers `--qps` distinct names a second
(each one a cache miss, so one upstream packet each), and the subject forwards them. The
packaged pacer (as `dnscache-agent pacer` and as `dnscache-agent-pacer`, which skips the
CLI's imports) gets `[budget] limit_pps = 2 x qps` so the rate is set by the offer, not the
bucket. Each subject is also measured idle for 5 s first (the prototype ticks every 1 ms;
the packaged pacer sleeps until a token or a packet is due). CPU is (user + system) time over
the wall time, RSS sampled every second, as
`bench/daemon_cost.py` reports the daemon. Prints JSON; only this CLI prints.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
UPSTREAM = "127.0.0.2"
IDLE_SECONDS = 5.0

RESPONDER = r"""
import socket, struct, sys, time
count_file = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("127.0.0.2", 53))
n, last = 0, time.monotonic()
answer = struct.pack("!HHHIH4s", 0xC00C, 1, 1, 60, 4, bytes([192, 0, 2, 10]))
while True:
    data, peer = s.recvfrom(4096)
    if len(data) < 17:
        continue
    # QR, RD, RA; one answer pointing at the question's name
    s.sendto(data[:2] + b"\x81\x80" + data[4:6] + b"\x00\x01\x00\x00\x00\x00" + data[12:]
             + answer, peer)
    n += 1
    now = time.monotonic()
    if now - last >= 1.0:
        with open(count_file, "w") as fh:
            fh.write(str(n))
        last = now
"""


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, text=True, capture_output=True, timeout=30,
                          **kwargs)


class Namespace:
    """A throwaway network namespace with loopback up; processes started in it are ended by
    PID and the namespace deleted on exit."""

    def __init__(self) -> None:
        self.name = f"pcost-{os.getpid()}"
        self.procs: list[subprocess.Popen[Any]] = []

    def __enter__(self) -> Namespace:
        _run(["ip", "netns", "add", self.name])
        _run(["ip", "-n", self.name, "link", "set", "lo", "up"])
        _run(["ip", "-n", self.name, "addr", "add", f"{UPSTREAM}/8", "dev", "lo"])
        return self

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc: subprocess.Popen[Any] = subprocess.Popen(
            ["ip", "netns", "exec", self.name, *argv], cwd=REPO, env=env,
            stdin=subprocess.DEVNULL, **kwargs)
        self.procs.append(proc)
        return proc

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            stop(proc)
        subprocess.run(["ip", "netns", "del", self.name], check=False, timeout=30)


def stop(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace)


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready within {timeout}s")


def read_count(path: Path) -> int:
    try:
        return int(path.read_text() or 0)
    except (OSError, ValueError):
        return 0


def measure_subject(ns: Namespace, tmp: Path, name: str, argv: list[str], ready: Any,
                    port: int, address: str, qps: int, seconds: float,
                    queries: Path, count_file: Path, responder_pid: int) -> dict[str, Any]:
    """Start one subject, offer the load, measure the subject and the responder."""
    from bench.daemon_cost import measure

    log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115 (the child holds it)
    proc = ns.popen(argv, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    wait_for(lambda: ready() or proc.poll() is not None, 20, name)
    if proc.poll() is not None:
        raise RuntimeError(f"{name} exited: {(tmp / f'{name}.log').read_text()[-2000:]}")
    idle = measure(proc.pid, IDLE_SECONDS)  # no load: what waiting costs
    out = tmp / f"{name}-load.json"
    warmup = 2.0
    load = ns.popen([sys.executable, "-m", "bench.loadgen", "--server", address, "--port",
                     str(port), "--queries", str(queries), "--qps", str(qps), "--seconds",
                     str(seconds + warmup + 1), "--timeout", "2", "--out", str(out)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(warmup)
    before = read_count(count_file)
    t0 = time.monotonic()
    import threading

    figures: dict[str, Any] = {}

    def responder() -> None:
        figures["responder"] = measure(responder_pid, seconds)

    side = threading.Thread(target=responder)
    side.start()
    subject = measure(proc.pid, seconds)
    side.join()
    upstream = (read_count(count_file) - before) / max(time.monotonic() - t0, 1e-3)
    load.wait(seconds + 60)
    stop(proc)
    result = json.loads(out.read_text()) if out.exists() else {}
    return {"subject": subject, "idle": {k: idle[k] for k in ("cpu_pct_one_core", "rss_mb_max")},
            "responder": figures["responder"],
            "upstream_pps": round(upstream, 1),
            "load": {k: result.get(k) for k in ("achieved_qps", "sent", "lost", "failed")}}


def run(qps: int, seconds: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="pacer-cost-"))
    try:
        count = int(qps * (seconds + 10))
        queries = tmp / "queries.txt"
        queries.write_text("".join(f"n{i}.cost.test A\n" for i in range(count)))
        cfg = tmp / "agent.toml"
        cfg.write_text(f"[budget]\nlimit_pps = {2 * qps}\n")
        stats = tmp / "stats.json"
        count_file = tmp / "upstream-count"
        with Namespace() as ns:
            resp = ns.popen([sys.executable, "-c", RESPONDER, str(count_file)])
            time.sleep(0.5)
            flags = ["--config", str(cfg), "--upstream", UPSTREAM, "--stats-file", str(stats),
                     "--no-warm"]
            # `dnscache-agent pacer` and `dnscache-agent-pacer` (same code, fewer imports)
            packaged = measure_subject(
                ns, tmp, "pacer", [sys.executable, "-m", "dnscache_agent", "pacer", *flags],
                stats.exists, 5354, "127.0.0.1", qps, seconds, queries, count_file, resp.pid)
            lean = measure_subject(
                ns, tmp, "pacer-lean", [sys.executable, "-m", "dnscache_agent.pacer", *flags],
                stats.exists, 5354, "127.0.0.1", qps, seconds, queries, count_file, resp.pid)
            proto_log = tmp / "prototype.log"
            prototype = measure_subject(
                ns, tmp, "prototype",
                [sys.executable, "-m", "bench.pacer", "--listen", "127.0.0.3", "--port", "53",
                 "--upstream", UPSTREAM, "--rate", str(2 * qps),
                 "--run-for", str(seconds + 60)],
                lambda: "listening" in (proto_log.read_text() if proto_log.exists() else ""),
                53, "127.0.0.3", qps, seconds, queries, count_file, resp.pid)
        cpu = packaged["subject"]["cpu_pct_one_core"]
        return {
            "qps_offered": qps, "seconds": seconds,
            "pacer": packaged, "pacer_lean": lean, "prototype": prototype,
            "ratios": {
                "pacer_cpu_vs_prototype": round(cpu / max(
                    prototype["subject"]["cpu_pct_one_core"], 1e-6), 3),
                "pacer_cpu_vs_bare_responder": round(cpu / max(
                    packaged["responder"]["cpu_pct_one_core"], 1e-6), 3),
                "pacer_idle_cpu_vs_prototype": round(packaged["idle"]["cpu_pct_one_core"] / max(
                    prototype["idle"]["cpu_pct_one_core"], 1e-6), 3),
            },
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--qps", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if not 1 <= args.qps <= 20000 or not 1 <= args.seconds <= 120:
        parser.error("--qps 1..20000 and --seconds 1..120")
    if os.geteuid() != 0:
        parser.error("needs root (a private network namespace)")
    result = run(args.qps, args.seconds)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
