"""The wired resolv.conf every backend that writes one renders, from a manager's own output.

Differs from `static.render_wired` in one case: when the source lists no non-loopback server (a
resolved stub only, a previous local cache, no file), a fallback is still added, since a
loopback server is never one (`resolv_conf.fallback_servers`): the VPC resolver from instance
facts, else bind's first forwarder (169.254.169.253 by default, the Amazon DNS every VPC
instance reaches)."""

from __future__ import annotations

from .. import resolv_conf
from ..render import render
from .base import BackendContext


def render_resolv_conf(ctx: BackendContext, source_text: str | None) -> bytes:
    """resolv.conf with 127.0.0.1 first, the source's non-loopback servers (or the VPC
    resolver) after it, its search list kept, no rotate, and the configured timeout."""
    original = resolv_conf.parse(source_text or "")
    s = ctx.settings.resolver
    has_fallback = bool(resolv_conf.fallback_servers(original, 1))
    last_resort = ctx.vpc_resolver or next(iter(ctx.settings.all_forwarders), None)
    extra = () if has_fallback or not last_resort else (last_resort,)
    wired = resolv_conf.wire(original, fallback=s.fallback_servers, timeout=s.timeout,
                             attempts=s.attempts, extra_fallback=extra)
    return render("resolv.conf.j2", agent_version=ctx.agent_version,
                  **resolv_conf.to_lines(wired)).encode()
