"""`dnscache-agent pacer` (and `python -m dnscache_agent.pacer`): settings and flags in, a
running pacer out. The flags override settings for tests and benchmarks; under systemd the
unit passes none and agent.toml decides."""

from __future__ import annotations

import argparse
import ipaddress
import logging
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError
from ..resolv_conf import parse as parse_resolv_conf
from ..rootfs import Root
from ..settings import Settings
from ..stats.top import SearchPolicy
from .bucket import pacing_from_limit
from .queue import QueueLimits
from .server import PacerConfig, run_server

log = logging.getLogger(__name__)

#: Where the warm-up asks by default: named on this host.
DEFAULT_WARM_VIA = ("127.0.0.1", 53)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The pacer's own flags (shared by the CLI subcommand and `python -m`)."""
    parser.add_argument("--listen", metavar="ADDR", help="loopback address (default [pacer] "
                        "listen)")
    parser.add_argument("--port", type=int, metavar="N", help="default [pacer] port")
    parser.add_argument("--upstream", action="append", metavar="ADDR",
                        help="resolver address, repeatable (default [cache] forwarders)")
    parser.add_argument("--upstream-port", type=int, default=53, metavar="N")
    parser.add_argument("--stats-file", metavar="PATH", help="default [pacer] stats_file")
    parser.add_argument("--warm-file", metavar="PATH", help="default [pacer] warm_file")
    parser.add_argument("--warm-seed", metavar="PATH", help="default [pacer] warm_seed")
    parser.add_argument("--warm-via", metavar="ADDR[:PORT]",
                        help="where warm-up queries go: named (default 127.0.0.1:53)")
    parser.add_argument("--no-warm", action="store_true",
                        help="neither load, refetch nor save the warm list")
    parser.add_argument("--run-for", type=float, metavar="SECONDS",
                        help="exit after this long (tests, benchmarks)")


def parse_address(text: str, default_port: int) -> tuple[str, int]:
    """"ADDR", "ADDR:PORT" or "[V6]:PORT" as (address, port). Raises ConfigError."""
    host, port = text, default_port
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = _port(rest.lstrip(":"), text)
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        port = _port(p, text)
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        raise ConfigError(f"--warm-via {text!r}: not an IP address") from None


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigError(f"{whole!r}: bad port")
    return int(text)


def build_config(settings: Settings, root: Root, args: argparse.Namespace) -> PacerConfig:
    """The process's configuration from settings, with command-line overrides. Raises
    ConfigError (one line naming the setting) for a combination that cannot work."""
    p = settings.pacer
    try:
        pacing = pacing_from_limit(settings.budget.limit_pps, p.margin_pct, p.burst)
    except ValueError as exc:
        raise ConfigError(f"{settings.source}: pacer.burst / pacer.margin_pct: {exc}") from None
    listen = args.listen or p.listen
    try:
        if not ipaddress.ip_address(listen).is_loopback:
            raise ConfigError(f"--listen {listen}: not a loopback address")
    except ValueError:
        raise ConfigError(f"--listen {listen!r}: not an IP address") from None
    port = args.port if args.port is not None else p.port
    if not 0 < port < 65536:
        raise ConfigError(f"--port {port}: out of range")
    upstreams = tuple(args.upstream) if args.upstream else settings.all_forwarders
    for u in upstreams:
        try:
            ipaddress.ip_address(u)
        except ValueError:
            raise ConfigError(f"--upstream {u!r}: not an IP address") from None
    warm = not args.no_warm and p.warm_max > 0
    warm_file = args.warm_file or p.warm_file
    seed = args.warm_seed if args.warm_seed is not None else p.warm_seed
    return PacerConfig(
        # named prefetches only this close to expiry (plus a second of scheduling slack)
        limits=QueueLimits(prefetch_window=settings.cache.prefetch_trigger + 1.0),
        search_policy=_search_policy(root),
        listen=listen, port=port, upstreams=upstreams, upstream_port=args.upstream_port,
        pacing=pacing,
        stats_file=root.path(args.stats_file or p.stats_file),
        warm_file=root.path(warm_file) if warm else None,
        warm_seed=root.path(seed) if warm and seed else None,
        warm_max=p.warm_max if warm else 0,
        warm_via=(parse_address(args.warm_via, 53) if args.warm_via else DEFAULT_WARM_VIA)
        if warm else None,
        run_for=args.run_for)


def _search_policy(root: Root) -> SearchPolicy:
    """The host's search list and ndots (glibc defaults when resolv.conf is unreadable)."""
    try:
        text = root.read_text("/etc/resolv.conf")
    except OSError:
        text = None
    return SearchPolicy.from_resolv_conf(parse_resolv_conf(text)) if text else SearchPolicy()


def run_pacer(settings: Settings, root: Root, args: argparse.Namespace) -> int:
    """Run the pacer in the foreground until SIGTERM; returns the exit code."""
    from ..sd_notify import notifier_from_env

    config = build_config(settings, root, args)
    return run_server(config, notifier=notifier_from_env())


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m dnscache_agent.pacer`: the same process without the CLI's other imports."""
    import sys

    from ..errors import DnscacheError
    from ..settings import DEFAULT_CONFIG_PATH, load

    parser = argparse.ArgumentParser(prog="python -m dnscache_agent.pacer",
                                     description=__doc__)
    parser.add_argument("--config", metavar="FILE")
    parser.add_argument("--root", default="/", metavar="DIR")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    root = Root(Path(args.root))
    try:
        import os

        config = args.config or str(root.path(DEFAULT_CONFIG_PATH))
        settings = load(config, required=args.config is not None, environ=os.environ)
        return run_pacer(settings, root, args)
    except DnscacheError as exc:
        print(f"dnscache-agent pacer: error: {exc}", file=sys.stderr)
        return exc.exit_code
