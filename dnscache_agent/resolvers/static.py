"""A plain /etc/resolv.conf that nothing regenerates: the agent writes it directly."""

from __future__ import annotations

from .. import resolv_conf
from ..plan_model import FileChange
from ..render import render
from .base import RESOLV_CONF, BackendContext, HostView, ResolverBackend


def render_wired(ctx: BackendContext, original_text: str | None) -> bytes:
    """The wired resolv.conf rendered from the original content; shared by every backend whose
    output is a resolv.conf-format file."""
    original = resolv_conf.parse(original_text or "")
    s = ctx.settings.resolver
    extra = () if original.nameservers or not ctx.vpc_resolver else (ctx.vpc_resolver,)
    wired = resolv_conf.wire(original, fallback=s.fallback_servers, timeout=s.timeout,
                             attempts=s.attempts, extra_fallback=extra)
    return render("resolv.conf.j2", agent_version=ctx.agent_version,
                  **resolv_conf.to_lines(wired)).encode()


class StaticBackend(ResolverBackend):
    """Lowest priority: used when no manager owns resolv.conf (a regular file, or none)."""

    name = "static"
    priority = 10

    def detect(self, view: HostView) -> str | None:
        if view.links.get(RESOLV_CONF):
            return None
        return f"{RESOLV_CONF} is a regular file and no resolver manager was found"

    def plan(self, ctx: BackendContext) -> tuple[FileChange, ...]:
        content = render_wired(ctx, ctx.view.text(RESOLV_CONF))
        return (FileChange(RESOLV_CONF, content, mode=0o644, owner=self.name),)
