"""`python -m rig up`: bring a simulated VPC up for hands-on debugging, until Ctrl-C/SIGTERM."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from rig.vpc import SimulatedVpc
from rig.zone import ZoneSpec


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the VPC until a signal or `--max-lifetime`; exit code 0 or 1."""
    p = argparse.ArgumentParser(prog="python -m rig", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="create a simulated VPC and keep it until Ctrl-C/SIGTERM")
    up.add_argument("--limit", type=int, default=1024, help="packets/s to 169.254.169.253")
    up.add_argument("--prefix", default="rig", help="namespace name prefix")
    up.add_argument("--hosts", type=int, default=10000, help="h<i> names in the test zone")
    up.add_argument("--imds", action="store_true", help="serve a fake IMDSv2 on .254:80")
    up.add_argument("--max-lifetime", type=float, default=3600.0,
                    help="tear down after this many seconds (default 3600)")
    up.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    with SimulatedVpc.create(args.limit, args.prefix, zone=ZoneSpec(hosts=args.hosts),
                             imds=args.imds) as vpc:
        print(f"instance netns: {vpc.instance_ns}")
        print(f"vpc netns:      {vpc.vpc_ns}")
        print(f"instance /etc:  {vpc.instance_etc}")
        named_log = vpc.named.log_path if vpc.named else "-"
        print(f"zone:           {vpc.zone.origin} (named log {named_log})")
        if vpc.imds_url:
            print(f"imds:           {vpc.imds_url}")
        print(f"try: ip netns exec {vpc.instance_ns} dig h1.{vpc.zone.origin}")
        print(f"up for at most {args.max_lifetime:g}s; Ctrl-C or SIGTERM tears it down", flush=True)
        done.wait(args.max_lifetime)
    print("torn down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
