"""The command line: the only module that prints. Errors reach the user as one line and a
non-zero exit code chosen by the error's class."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence

from . import __version__, host_facts
from .app import Agent, Options
from .errors import CloudWatchError, ConfigError, DnscacheError, InternalError
from .services import units_for_host
from .stats.table import render_budget_bar, render_json, render_table
from .transaction import ApplyReport, pending

log = logging.getLogger("dnscache_agent")

EXIT_PENDING = 2


def _setup_logging(verbose: int) -> None:
    # Under systemd the journal timestamps each line; elsewhere we add our own.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM") and not os.environ.get("INVOCATION_ID"):
        fmt = "%(asctime)s " + fmt
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr)


def _options(args: argparse.Namespace) -> Options:
    return Options(root=args.root, config=args.config,
                   resolver_backend=args.resolver_backend, imds_endpoint=args.imds_endpoint,
                   install_packages=getattr(args, "install_packages", False),
                   tolerate_bad_config=args.func is cmd_rollback,
                   bind_version=getattr(args, "bind_version", None))


def cmd_facts(agent: Agent, args: argparse.Namespace) -> int:
    data = host_facts.to_dict(agent.facts)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    os_ = data["os"]
    bind = data["bind"]
    res = data["resources"]
    resolver = data["resolver"]
    assert isinstance(os_, dict) and isinstance(bind, dict) and isinstance(res, dict)
    assert isinstance(resolver, dict)
    print(f"os:        {os_['pretty_name']} (platform {data['platform']})")
    print(f"bind:      {'installed ' + str(bind['version']) if bind['installed'] else 'missing'}"
          f" (package {bind['package']}, unit {bind['unit']})")
    note = "" if res.get("measured", True) else " (first-boot defaults, not measured)"
    print(f"resources: {res['cpus']} CPUs, {int(res['memory_bytes']) // 2**20} MiB{note}")
    ec2 = data["ec2"]
    if isinstance(ec2, dict):
        print(f"ec2:       {ec2['instance_id']} {ec2['instance_type']} {ec2['region']}")
        for i in ec2["interfaces"]:  # type: ignore[union-attr]
            print(f"  eth{i['device_number']}: {i['mac']} {i['interface_id']} "
                  f"vpc {','.join(i['vpc_cidrs'])} resolver {i['vpc_resolver']}")
    else:
        print(f"ec2:       not on EC2 (no IMDSv2 answer from {agent.settings.imds.endpoint})")
    print(f"resolver:  {resolver['backend']}: {resolver['reason']}")
    return 0


def cmd_plan(agent: Agent, args: argparse.Namespace) -> int:
    plan = agent.plan()
    diffs = pending(plan, agent.root)
    if not plan.bind_installed:
        print(f"# {agent.facts.profile.package} is not installed: apply needs --install-packages")
    for d in diffs:
        sys.stdout.write(d.unified())
    if not diffs:
        print("nothing to do: the host matches the plan")
        return 0
    return EXIT_PENDING


def cmd_apply(agent: Agent, args: argparse.Namespace) -> int:
    if getattr(args, "repair", False) and agent.installed_service() is None:
        # The repair unit was queued before a rollback removed the service: the rollback
        # is final, so there is nothing to repair.
        print("not repairing: the agent's service is not installed (rolled back)")
        return 0
    with agent.lock():
        if not agent.facts.bind.installed and args.install_packages:
            agent.install_bind()
        report = agent.transaction().apply(agent.plan())
        if agent.opts.resolver_backend:
            agent.remember_backend(agent.opts.resolver_backend)
    _print_apply(report)
    return 0


def _print_apply(report: ApplyReport) -> None:
    for path in report.recovered:
        print(f"recovered {path} from an interrupted run")
    if report.nothing_to_do:
        health = f" ({report.health.detail})" if report.health else ""
        print(f"nothing to do: the host already matches the plan{health}")
        return
    for path in report.changed:
        print(f"changed {path}")
    if report.pacer_action:
        print(f"pacer {report.pacer_action}")
    if report.service_action:
        print(f"named {report.service_action}")
    for line in report.unit_actions:
        print(line)
    if report.health:
        print(f"healthy: {report.health.detail}")


def cmd_rollback(agent: Agent, args: argparse.Namespace) -> int:
    with agent.lock():
        report = agent.bare_transaction().rollback()
    for line in report.unit_actions:
        print(line)
    if not report.had_state:
        print("nothing to roll back: the agent has not changed this host")
        return 0
    for path in report.restored:
        print(f"restored {path}")
    if report.service_action:
        print(f"named {report.service_action}")
    if report.pacer_action:
        print(f"pacer {report.pacer_action}")
    print("rolled back to the pre-agent state")
    return 0


def cmd_verify(agent: Agent, args: argparse.Namespace) -> int:
    report = agent.verify()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for c in report.checks:
            where = f" [{c.path}{':' + str(c.line) if c.line else ''}]" if c.path else ""
            print(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}{where}")
            if not c.ok and c.fix:
                print(f"     fix: {c.fix}")
    return 0 if report.ok else 1


def cmd_stats(agent: Agent, args: argparse.Namespace) -> int:
    sampler = agent.sampler()
    sampler.sample()
    shown = 0
    while True:
        time.sleep(1.0)
        sample = sampler.sample()
        assert sample is not None
        if args.json:
            print(json.dumps(render_json(sample), indent=None if args.watch else 2), flush=True)
        else:
            if args.watch and sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[2J")
            print(render_table(sample))
            for status in sampler.budget.statuses().values():
                print(render_budget_bar(status))
            sys.stdout.flush()
        shown += 1
        if not args.watch or (args.count and shown >= args.count):
            return 0


def _fleet_name(agent: Agent, given: str | None, *, required: bool) -> str | None:
    """`given`, else `[metrics] fleet`, else the `fleet_tag` instance tag read from IMDS."""
    from .imds import ImdsClient
    from .sinks.cloudwatch import resolve_fleet

    if given:
        return given
    s = agent.settings
    reader = (ImdsClient(s.imds.endpoint, s.imds.timeout).instance_tag
              if s.imds.enabled and s.metrics.fleet_tag else None)
    fleet = resolve_fleet(s.metrics, reader)
    if fleet is None and required:
        raise ConfigError(f"{s.source}: metrics.fleet: no fleet name (give --fleet NAME, or set "
                          "[metrics] fleet, or fleet_tag with the tag exposed in IMDS)")
    return fleet


def _cloudwatch_client(agent: Agent) -> object:
    from .sinks.cloudwatch import build_client

    m = agent.settings.metrics
    region = m.region or None
    if region is None and agent.facts.ec2:
        region = agent.facts.ec2.region or None
    return build_client(region=region, endpoint_url=m.endpoint_url or None)


def cmd_alarm_create_fleet(agent: Agent, args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from .sinks.cloudwatch import create_fleet_headroom_alarm

    fleet = _fleet_name(agent, args.fleet, required=True)
    assert fleet is not None
    client = _cloudwatch_client(agent)
    try:
        name = create_fleet_headroom_alarm(client, agent.settings.metrics.namespace, fleet,
                                           threshold_pct=args.threshold,
                                           alarm_actions=tuple(args.alarm_action))
    except (BotoCoreError, ClientError) as exc:
        raise CloudWatchError(f"alarm create: {exc}") from None
    print(f"alarm {name}: BudgetHeadroom < {args.threshold:g}% anywhere in fleet {fleet}")
    return 0


def cmd_dashboard_create(agent: Agent, args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from .sinks.dashboard import dashboard_body, put_dashboard, validate_dashboard

    s = agent.settings
    fleet = _fleet_name(agent, args.fleet, required=args.fleet is not None)
    client: object | None = None
    region = args.region or s.metrics.region
    if not region and not args.print:
        client = _cloudwatch_client(agent)
        region = str(getattr(getattr(client, "meta", None), "region_name", "") or "")
    if not region:
        raise ConfigError(f"{s.source}: metrics.region: no region for the dashboard's widgets "
                          "(set it, or give --region)")
    body = dashboard_body(s.metrics.namespace, region, fleet=fleet,
                          warn_headroom_pct=s.budget.warn_headroom_pct,
                          limit_pps=s.budget.limit_pps)
    if args.print:
        validate_dashboard(args.name, body)
        print(json.dumps(body, indent=2))
        return 0
    client = client or _cloudwatch_client(agent)
    try:
        messages = put_dashboard(client, args.name, body)
    except (BotoCoreError, ClientError) as exc:
        raise CloudWatchError(f"dashboard create: {exc}") from None
    for message in messages:
        print(f"dashboard {args.name}: CloudWatch says: {message}", file=sys.stderr)
    scope = f"fleet {fleet}" if fleet else "all instances"
    print(f"dashboard {args.name}: {len(body['widgets'])} widgets, {scope}, region {region}")
    return 0


def cmd_cost(agent: Agent, args: argparse.Namespace) -> int:
    from .sinks.cost import render_report

    if args.hosts < 1 or args.interfaces < 1:
        raise ConfigError("cost: --hosts and --interfaces must be at least 1")
    print(render_report(agent.settings.metrics, args.hosts, interfaces=args.interfaces),
          end="")
    return 0


def cmd_alarm_create(agent: Agent, args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from .sinks.cloudwatch import build_client, create_headroom_alarm

    if args.fleet is not None:
        return cmd_alarm_create_fleet(agent, args)
    m = agent.settings.metrics
    facts = agent.facts
    instance_id = args.instance_id or (facts.ec2.instance_id if facts.ec2 else None)
    if not instance_id:
        raise ConfigError("alarm create: --instance-id is required off EC2 (IMDS did not answer)")
    client = build_client(region=m.region or (facts.ec2.region if facts.ec2 else None),
                          endpoint_url=m.endpoint_url or None)
    try:
        name = create_headroom_alarm(client, m.namespace, instance_id, args.interface,
                                     threshold_pct=args.threshold,
                                     alarm_actions=tuple(args.alarm_action))
    except (BotoCoreError, ClientError) as exc:
        raise CloudWatchError(f"alarm create: {exc}") from None
    print(f"alarm {name}: BudgetHeadroom < {args.threshold:g}% on {instance_id}/{args.interface}")
    return 0


def cmd_run(agent: Agent, args: argparse.Namespace) -> int:
    from .daemon import run_daemon

    return run_daemon(agent, args)


def cmd_install_service(agent: Agent, args: argparse.Namespace) -> int:
    """The units are part of the plan: written through the transaction (checkpointed, so
    rollback removes them), then `systemctl daemon-reload` and `enable --now`."""
    import shutil

    from . import agent_units, planner

    command = args.exec_path or agent_units.installed_command(
        which=shutil.which("dnscache-agent"))
    service = planner.ServiceInstall(command, agent_units.shipped_units(),
                                     start=not args.no_start)
    with agent.lock():
        report = agent.bare_transaction().apply(agent.service_plan(service))
    _print_apply(report)
    if units_for_host(agent.root, agent.runner).name != "systemd":
        print("systemd is not running here: the service starts at the next boot")
    return 0


def cmd_pacer(agent: Agent, args: argparse.Namespace) -> int:
    from .pacer.main import run_pacer

    if not args.verbose:  # a daemon: its start, warm-up and stop lines belong in the journal
        logging.getLogger("dnscache_agent.pacer").setLevel(logging.INFO)
    return run_pacer(agent.settings, agent.root, args)


def cmd_top(agent: Agent, args: argparse.Namespace) -> int:
    """Where the upstream budget goes: the pacer's tally (top.json next to its stats file)
    with each class's fix named against this host's settings and bind."""
    from pathlib import Path

    from .bind_version import BindFeatures
    from .stats.top import FixContext, render_top, with_fixes
    from .stats.top_file import read_top, top_path

    s = agent.settings
    path = Path(args.file) if args.file else top_path(agent.root.path(s.pacer.stats_file))
    top = read_top(path)
    if top is None:
        raise DnscacheError(f"{path}: no current figures: the pacer, which tallies upstream "
                            "questions, is not running ([pacer] enabled, "
                            "dnscache-agent-pacer.service)")
    version = agent.facts.bind.version if agent.facts.bind.installed else None
    context = FixContext(min_ncache_ttl=s.cache.min_ncache_ttl,
                         min_cache_ttl=s.cache.min_cache_ttl, filter_aaaa=s.cache.filter_aaaa,
                         filter_aaaa_available=BindFeatures(version).supports(
                             "filter-aaaa-plugin"))
    report = top.reports.get(args.window)
    if report is None:
        raise DnscacheError(f"{path}: no {args.window} window")
    report = with_fixes(report, top.policy, top.short_ttl, context)
    if args.json:
        print(json.dumps({"time": top.time, **report.as_dict()}, indent=2))
    else:
        sys.stdout.write(render_top(report, names=args.names))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dnscache-agent",
        description="A local bind9 cache in front of the Amazon-provided DNS resolver.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default="/", metavar="DIR",
                        help="read and write every host path under DIR; skips service actions")
    common.add_argument("--config", metavar="FILE",
                        help="settings file (default /etc/dnscache-agent/agent.toml)")
    common.add_argument("--resolver-backend", metavar="NAME",
                        help="force a resolver backend instead of detecting it")
    common.add_argument("--imds-endpoint", metavar="URL",
                        help="IMDSv2 base URL (default http://169.254.169.254)")
    common.add_argument("--bind-version", metavar="X.Y",
                        help="named's version in a --root tree (default: read from its dpkg "
                             "database; required for rpm trees)")
    common.add_argument("-v", "--verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("facts", parents=[common], help="print what the agent sees on this host")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_facts)
    p = sub.add_parser("plan", parents=[common],
                       help="show the diff apply would make (exit 2 if changes are pending)")
    p.set_defaults(func=cmd_plan)
    p = sub.add_parser("apply", parents=[common], help="apply the plan in one transaction")
    p.add_argument("--install-packages", action="store_true",
                   help="install bind when it is missing")
    p.set_defaults(func=cmd_apply)
    p.add_argument("--repair", action="store_true",
                   help="as the repair unit runs it: do nothing when the service is not "
                        "installed (a rollback removed it)")
    p = sub.add_parser("rollback", parents=[common], help="restore the pre-agent state")
    p.set_defaults(func=cmd_rollback)
    p = sub.add_parser("verify", parents=[common],
                       help="check the host matches the plan and the cache answers")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("stats", parents=[common],
                       help="query rates, cache hit ratio and the per-interface packet budget")
    p.add_argument("--json", action="store_true")
    p.add_argument("--watch", action="store_true", help="refresh once a second")
    p.add_argument("--count", type=int, default=0, help="with --watch: stop after N samples")
    p.set_defaults(func=cmd_stats)
    # The group takes no options of its own: `create` has them, so they are parsed once.
    p = sub.add_parser("alarm", help="CloudWatch alarms")
    alarm = p.add_subparsers(dest="alarm_command", required=True)
    p = alarm.add_parser("create", parents=[common],
                         help="alarm when budget headroom falls below a threshold")
    p.add_argument("--interface", default="eth0")
    p.add_argument("--threshold", type=float, default=20.0, help="headroom %% (default 20)")
    p.add_argument("--instance-id")
    p.add_argument("--alarm-action", action="append", default=[], metavar="ARN")
    p.add_argument("--fleet", nargs="?", const="", metavar="NAME",
                   help="alarm on the fleet aggregate (lowest headroom of any host) instead; "
                        "NAME defaults to [metrics] fleet or the fleet_tag instance tag")
    p.set_defaults(func=cmd_alarm_create)
    p = sub.add_parser("dashboard", help="CloudWatch dashboards")
    dashboard = p.add_subparsers(dest="dashboard_command", required=True)
    p = dashboard.add_parser("create", parents=[common],
                             help="put a CloudWatch dashboard: fleet headroom, worst instances, "
                                  "link-local drops, hit ratio")
    p.add_argument("--name", default="dnscache-agent", help="dashboard name")
    p.add_argument("--fleet", nargs="?", const="", metavar="NAME",
                   help="read the fleet aggregates of NAME (default: [metrics] fleet or the "
                        "fleet_tag instance tag, when set)")
    p.add_argument("--region", help="region of the widgets' metrics (default: the client's)")
    p.add_argument("--print", action="store_true",
                   help="print the dashboard body instead of putting it")
    p.set_defaults(func=cmd_dashboard_create)
    p = sub.add_parser("cost", parents=[common],
                       help="CloudWatch metric count and monthly cost for N hosts")
    p.add_argument("--hosts", type=int, default=1)
    p.add_argument("--interfaces", type=int, default=1,
                   help="interfaces per host routing to the resolver")
    p.set_defaults(func=cmd_cost)
    p = sub.add_parser("run", parents=[common],
                       help="the daemon: statistics, metrics export and drift self-heal")
    p.add_argument("--repair-trigger", metavar="FILE",
                   help="on drift, rewrite FILE (watched by dnscache-agent-repair.path) "
                        "instead of applying in this process")
    p.add_argument("--no-repair", action="store_true",
                   help="log drift but never repair it")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("install-service", parents=[common],
                       help="install and enable the systemd unit from this package")
    p.add_argument("--exec-path", metavar="PATH",
                   help="dnscache-agent command the units run (default: this installation's)")
    p.add_argument("--no-start", action="store_true",
                   help="enable the service but do not start it now")
    p.set_defaults(func=cmd_install_service)
    p = sub.add_parser("pacer", parents=[common],
                       help="the budget-pacing forwarder between named and the resolver "
                            "(runs in the foreground)")
    from .pacer.main import add_arguments as add_pacer_arguments

    add_pacer_arguments(p)
    p.set_defaults(func=cmd_pacer)
    p = sub.add_parser("top", parents=[common],
                       help="where the upstream budget goes: the (name, type) pairs and query "
                            "classes that sent the most packets, and each class's fix")
    p.add_argument("--json", action="store_true")
    p.add_argument("--window", choices=("minute", "hour"), default="minute")
    p.add_argument("--names", type=int, default=10, help="names to show (default 10)")
    p.add_argument("--file", metavar="PATH",
                   help="the pacer's top.json (default: next to [pacer] stats_file)")
    p.set_defaults(func=cmd_top)
    return parser


def main(argv: Sequence[str] | None = None, *,
         agent_factory: Callable[[Options], Agent] = Agent) -> int:
    """The one error boundary: whatever a command raises reaches the user as one line on
    stderr and an exit code (the table in docs/reliability.md); the traceback only at -vv.
    `agent_factory` builds the collaborators (tests pass one that fails)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    command = " ".join(c for c in (args.command, getattr(args, "alarm_command", None)) if c)
    try:
        agent = agent_factory(_options(args))
        return int(args.func(agent, args))
    except DnscacheError as exc:
        log.debug("%s failed", command, exc_info=True)
        _error_line(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        print("dnscache-agent: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the boundary: no traceback reaches a user or the journal
        log.debug("%s failed", command, exc_info=True)
        _error_line(f"{command}: {_internal_reason(exc)} (run with -vv for the traceback)")
        return InternalError.exit_code


def _error_line(message: str) -> None:
    """Print one line, whatever the message holds (newlines folded)."""
    with contextlib.suppress(OSError):  # stderr gone (a closed pipe): the exit code remains
        print(f"dnscache-agent: error: {' '.join(message.splitlines())}", file=sys.stderr)


def _internal_reason(exc: BaseException) -> str:
    """`<where>: <Type>: <message>`: where is the innermost module of ours in the traceback
    (what a bug report needs), the message clipped to one short line."""
    where = ""
    tb = exc.__traceback__.tb_next if exc.__traceback__ else None  # past main() itself
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        if module.startswith("dnscache_agent"):
            where = f"{module}.{tb.tb_frame.f_code.co_name}"
        tb = tb.tb_next
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}{': ' + str(exc.filename) if exc.filename else ''}"
    else:
        text = str(exc)
    text = " ".join(text.split())[:200]
    reason = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return f"internal error in {where}: {reason}" if where else f"internal error: {reason}"
