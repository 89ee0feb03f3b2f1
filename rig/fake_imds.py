"""A fake EC2 instance metadata service (IMDSv2 only), on stdlib http.server.

Two ways to use it:
- in-process on loopback, for tests in the root namespace:
  `with FakeImds.serve(host="127.0.0.1", port=0) as imds: imds.url`
- as `python -m rig.fake_imds --host 169.254.169.254 --port 80`, which the rig starts inside
  the vpc namespace so an agent in the instance namespace reaches it like on EC2.

Like the real service: a token comes from `PUT /latest/api/token` with
`X-aws-ec2-metadata-token-ttl-seconds` (1-21600), every GET needs `X-aws-ec2-metadata-token`
(401 without a valid one), unknown paths answer 404. `GET /_rig/stats` (no token) returns
request counts as JSON, so a test can count what an agent in another process asked for.
`delay` slows every answer; `hang` holds every request until the server stops.
"""
from __future__ import annotations

import argparse
import json
import logging
import secrets
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import quote

log = logging.getLogger(__name__)

TOKEN_PATH = "/latest/api/token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
MAX_TOKEN_TTL = 21600


@dataclass(frozen=True)
class InterfaceFacts:
    """One ENI as IMDS describes it under network/interfaces/macs/<mac>/."""

    mac: str = "0a:00:00:00:00:01"
    device_number: int = 0
    interface_id: str = "eni-0123456789abcdef0"
    vpc_id: str = "vpc-0123456789abcdef0"
    vpc_ipv4_cidr_blocks: tuple[str, ...] = ("169.254.0.0/16",)
    local_ipv4s: tuple[str, ...] = ("169.254.100.2",)


@dataclass(frozen=True)
class ImdsFacts:
    """What the fake instance is. The first interface is the primary one (its mac is `mac`)."""

    instance_id: str = "i-0123456789abcdef0"
    instance_type: str = "c5.large"
    region: str = "us-east-1"
    availability_zone: str = "us-east-1a"
    interfaces: tuple[InterfaceFacts, ...] = (InterfaceFacts(),)
    #: Instance tags exposed under tags/instance/ (EC2's InstanceMetadataTags=enabled);
    #: empty means the option is off, so tags/instance/ answers 404 like on EC2.
    tags: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ImdsFacts:
        """Inverse of `dataclasses.asdict` (lists become tuples)."""
        raw: Any = data.get("interfaces", [])
        ifaces = tuple(InterfaceFacts(**_tuples(i)) for i in raw)
        raw_tags: Any = data.get("tags", [])
        tags = tuple((str(k), str(v)) for k, v in raw_tags)
        rest: dict[str, Any] = {k: v for k, v in data.items()
                                if k not in ("interfaces", "tags")}
        return cls(interfaces=ifaces, tags=tags, **rest)


def _tuples(fields: dict[str, Any]) -> dict[str, Any]:
    """JSON lists back to the tuples the frozen dataclasses hold."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}


def metadata_tree(facts: ImdsFacts) -> dict[str, str]:
    """Map of path under /latest/meta-data/ to the body IMDS returns. Pure."""
    primary = facts.interfaces[0]
    tree: dict[str, str] = {
        "instance-id": facts.instance_id,
        "instance-type": facts.instance_type,
        "placement/region": facts.region,
        "placement/availability-zone": facts.availability_zone,
        "mac": primary.mac,
        "local-ipv4": primary.local_ipv4s[0] if primary.local_ipv4s else "",
        "network/interfaces/macs/": "\n".join(f"{i.mac}/" for i in facts.interfaces),
    }
    for i in facts.interfaces:
        base = f"network/interfaces/macs/{i.mac}/"
        leaves = {
            "device-number": str(i.device_number),
            "interface-id": i.interface_id,
            "vpc-id": i.vpc_id,
            "vpc-ipv4-cidr-block": i.vpc_ipv4_cidr_blocks[0] if i.vpc_ipv4_cidr_blocks else "",
            "vpc-ipv4-cidr-blocks": "\n".join(i.vpc_ipv4_cidr_blocks),
            "local-ipv4s": "\n".join(i.local_ipv4s),
            "mac": i.mac,
        }
        tree[base] = "\n".join(sorted(leaves))
        tree.update({base + k: v for k, v in leaves.items()})
    if facts.tags:
        tree["tags/instance/"] = "\n".join(k for k, _ in facts.tags)
        tree.update({f"tags/instance/{quote(k, safe=':@+=._-')}": v for k, v in facts.tags})
    tree[""] = "\n".join(sorted({k.split("/")[0] + ("/" if "/" in k else "")
                                 for k in tree if k}))
    return tree


@dataclass
class ImdsBehaviour:
    """Mutable knobs a test may turn while the server runs."""

    delay: float = 0.0  # seconds added before every answer
    hang: bool = False  # hold every request until the server stops


@dataclass
class ImdsState:
    """Tokens issued and requests seen; shared by the handler threads."""

    facts: ImdsFacts
    behaviour: ImdsBehaviour = field(default_factory=ImdsBehaviour)
    clock: Callable[[], float] = time.monotonic
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry (clock time)
    counts: Counter[str] = field(default_factory=Counter)  # "METHOD path" -> n
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)

    def count(self, method: str, path: str) -> None:
        with self.lock:
            self.counts[f"{method} {path}"] += 1

    def issue(self, ttl: int) -> str:
        token = secrets.token_urlsafe(32)
        with self.lock:
            self.tokens[token] = self.clock() + ttl
        return token

    def valid(self, token: str | None) -> bool:
        if not token:
            return False
        with self.lock:
            expiry = self.tokens.get(token)
        return expiry is not None and self.clock() < expiry


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib name)
        log.debug("imds %s " + format, self.address_string(), *args)

    def _reply(self, code: int, body: str = "", ctype: str = "text/plain") -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _throttle(self) -> bool:
        b = self.server.state.behaviour
        if b.hang:
            self.server.state.stopping.wait()
            return False
        if b.delay > 0:
            self.server.state.stopping.wait(b.delay)
        return True

    def do_PUT(self) -> None:  # noqa: N802 (http.server API)
        state = self.server.state
        state.count("PUT", self.path)
        if not self._throttle():
            return
        if self.path != TOKEN_PATH:
            self._reply(404, "Not Found")
            return
        if self.headers.get("X-Forwarded-For"):
            self._reply(403, "Forbidden")
            return
        raw = self.headers.get(TTL_HEADER, "")
        try:
            ttl = int(raw)
        except ValueError:
            ttl = 0
        if not 1 <= ttl <= MAX_TOKEN_TTL:
            self._reply(400, "Bad Request")
            return
        token = state.issue(ttl)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header(TTL_HEADER, str(ttl))
        self.send_header("Content-Length", str(len(token)))
        self.end_headers()
        self.wfile.write(token.encode())

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        state = self.server.state
        state.count("GET", self.path)
        if self.path == "/_rig/stats":
            with state.lock:
                body = json.dumps(dict(state.counts), sort_keys=True)
            self._reply(200, body, "application/json")
            return
        if not self._throttle():
            return
        if not state.valid(self.headers.get(TOKEN_HEADER)):
            self._reply(401, "Unauthorized")
            return
        prefix = "/latest/meta-data/"
        if not self.path.startswith(prefix) and self.path != prefix.rstrip("/"):
            self._reply(404, "Not Found")
            return
        key = self.path[len(prefix):] if self.path.startswith(prefix) else ""
        tree = self.server.tree
        # directories answer with or without the trailing "/"
        leaf: str | None = tree.get(key, tree.get(key + "/"))
        if leaf is None:
            self._reply(404, "Not Found")
            return
        self._reply(200, leaf)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], state: ImdsState) -> None:
        self.state = state
        self.tree = metadata_tree(state.facts)
        super().__init__(addr, _Handler)


class FakeImds:
    """A running fake IMDS; `url` is its base (e.g. http://127.0.0.1:40123)."""

    def __init__(self, server: _Server, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def state(self) -> ImdsState:
        return self._server.state

    @property
    def behaviour(self) -> ImdsBehaviour:
        """Knobs to slow down or hang the server while it runs."""
        return self._server.state.behaviour

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        host_s = host.decode() if isinstance(host, bytes) else host
        return f"http://{host_s}:{port}"

    def requests(self, method: str | None = None, path: str | None = None) -> int:
        """How many requests matched `method` and/or `path` (all when both None)."""
        with self.state.lock:
            items = list(self.state.counts.items())
        return sum(n for k, n in items
                   if (method is None or k.split(" ", 1)[0] == method)
                   and (path is None or k.split(" ", 1)[1] == path))

    def stop(self) -> None:
        """Release hung requests and shut the server down."""
        self.state.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    @classmethod
    def start(
        cls, *, host: str = "127.0.0.1", port: int = 0, facts: ImdsFacts | None = None,
        behaviour: ImdsBehaviour | None = None, clock: Callable[[], float] = time.monotonic,
    ) -> FakeImds:
        """Bind `host:port` (0 = ephemeral) and serve from a daemon thread."""
        state = ImdsState(facts=facts or ImdsFacts(), behaviour=behaviour or ImdsBehaviour(),
                          clock=clock)
        server = _Server((host, port), state)
        thread = threading.Thread(target=server.serve_forever, name="fake-imds", daemon=True)
        thread.start()
        return cls(server, thread)

    @classmethod
    @contextmanager
    def serve(
        cls, *, host: str = "127.0.0.1", port: int = 0, facts: ImdsFacts | None = None,
        behaviour: ImdsBehaviour | None = None, clock: Callable[[], float] = time.monotonic,
    ) -> Iterator[FakeImds]:
        """Context manager form of `start`; stops the server on exit."""
        imds = cls.start(host=host, port=port, facts=facts, behaviour=behaviour, clock=clock)
        try:
            yield imds
        finally:
            imds.stop()


def main(argv: list[str] | None = None) -> int:
    """CLI: serve until SIGTERM/SIGINT; prints `listening URL` once ready."""
    import signal

    p = argparse.ArgumentParser(prog="python -m rig.fake_imds", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--facts-json", help="file with ImdsFacts as JSON (dataclasses.asdict form)")
    p.add_argument("--delay", type=float, default=0.0, help="seconds before every answer")
    p.add_argument("--hang", action="store_true", help="never answer")
    args = p.parse_args(argv)
    facts = ImdsFacts()
    if args.facts_json:
        with open(args.facts_json, encoding="utf-8") as f:
            facts = ImdsFacts.from_dict(json.load(f))
    imds = FakeImds.start(host=args.host, port=args.port, facts=facts,
                          behaviour=ImdsBehaviour(delay=args.delay, hang=args.hang))
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    print(f"listening {imds.url}", flush=True)
    done.wait()
    imds.stop()
    return 0


def facts_json(facts: ImdsFacts) -> str:
    """JSON form of `facts` for `--facts-json`."""
    return json.dumps(asdict(facts))


if __name__ == "__main__":
    sys.exit(main())
