"""Prometheus sink: the same catalogue figures, served on 127.0.0.1 or written as a
node_exporter textfile.

`DnscacheCollector` has the one `collect()` method prometheus_client expects; it reads the
latest `Sample` from an injected callable, so scrapes never touch bind themselves.

`PrometheusServer` answers each connection in its own thread, with a socket timeout on every
connection and a cap on how many are open at once: any local user can connect to the port, and
one idle connection must neither block scrapes nor keep `close()` (SIGHUP, exit) from
returning. prometheus_client's own server is threaded too, but has no per-connection timeout,
no connection cap and no way to end open connections on shutdown.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from socketserver import ThreadingMixIn
from typing import Any, Callable, Optional
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, make_wsgi_app, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..stats.catalogue import CATALOGUE, HOST, Sample
from ..stats.catalogue import Metric as CatalogueMetric

log = logging.getLogger(__name__)

SampleSource = Callable[[], Optional[Sample]]


class DnscacheCollector:
    """Exposes the latest sample. Metrics sharing a Prometheus name (the RTT buckets) become
    one family with a label each; interface metrics get an `interface` label."""

    def __init__(self, source: SampleSource,
                 metrics: Sequence[CatalogueMetric] = CATALOGUE) -> None:
        self.source = source
        self.families: dict[str, list[CatalogueMetric]] = {}
        for m in metrics:
            if m.prometheus_name:
                self.families.setdefault(m.prometheus_name, []).append(m)

    def collect(self) -> Iterator[Metric]:
        try:
            sample = self.source()
        except Exception:  # a scrape must not take the agent down
            log.exception("Prometheus: could not read the latest sample")
            sample = None
        if sample is None:
            return
        for name, members in self.families.items():
            first = members[0]
            label_names = [k for k, _ in first.prometheus_labels]
            if first.scope != HOST:
                label_names = ["interface"] + label_names
            family: Metric
            if first.prometheus_type == "counter":
                # prometheus_client appends _total itself.
                family = CounterMetricFamily(name.removesuffix("_total"), first.help,
                                             labels=label_names)
            else:
                family = GaugeMetricFamily(name, first.help, labels=label_names)
            for m in members:
                extra = [v for _, v in m.prometheus_labels]
                if m.scope == HOST:
                    value = sample.host.get(m.key)
                    if value is not None:
                        family.add_metric(extra, value)
                else:
                    for iface, values in sorted(sample.interfaces.items()):
                        value = values.get(m.key)
                        if value is not None:
                            family.add_metric([iface] + extra, value)
            if family.samples:
                yield family


def make_registry(source: SampleSource) -> CollectorRegistry:
    """A registry holding only our collector (no process/platform collectors)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DnscacheCollector(source))  # type: ignore[arg-type]
    return registry


#: Seconds a connection may stay silent (or a request take to arrive) before it is dropped.
CONNECTION_TIMEOUT_S = 5.0
#: Connections served at once; more are closed on accept (each holds a thread).
MAX_CONNECTIONS = 32
#: How long `close()` waits for connection threads after it has shut their sockets.
CLOSE_WAIT_S = 2.0


class _QuietHandler(WSGIRequestHandler):
    # StreamRequestHandler applies this to the connection's socket: every read and write.
    timeout = CONNECTION_TIMEOUT_S

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        log.debug("prometheus scrape: " + format, *args)


class _BoundedThreadingServer(ThreadingMixIn, WSGIServer):
    """One daemon thread per connection, at most `max_connections` at once; remembers the
    open connections so `close_connections()` can end them."""

    daemon_threads = True
    block_on_close = False  # close() joins with its own bound instead

    def __init__(self, *args: Any, max_connections: int = MAX_CONNECTIONS,
                 **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        self._open: dict[socket.socket, threading.Thread] = {}
        self._open_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("Prometheus: %s connections open, refusing one more",
                        len(self._open))
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # the thread did not start: give the slot back
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open[request] = threading.current_thread()
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._open_lock:
                self._open.pop(request, None)
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints a traceback to stderr; a client that hung up or timed out is
        # not the agent's error.
        log.debug("Prometheus: connection from %s failed", client_address, exc_info=True)

    def close_connections(self) -> list[threading.Thread]:
        """Shut every open connection (its thread's next read or write fails at once)."""
        with self._open_lock:
            items = list(self._open.items())
        for conn, _ in items:
            with contextlib.suppress(OSError):  # already closed by its client
                conn.shutdown(socket.SHUT_RDWR)
        return [t for _, t in items]


class PrometheusServer:
    """HTTP endpoint on `host:port` (loopback by default), served from daemon threads. Port 0
    picks a free port; read it back from `.port`. `close()` stops it and returns within
    about `poll_interval + close_wait` seconds, whatever the connections are doing."""

    def __init__(self, source: SampleSource, port: int, host: str = "127.0.0.1", *,
                 connection_timeout: float = CONNECTION_TIMEOUT_S,
                 max_connections: int = MAX_CONNECTIONS, poll_interval: float = 0.2,
                 close_wait: float = CLOSE_WAIT_S) -> None:
        app = make_wsgi_app(make_registry(source))
        handler = type("_Handler", (_QuietHandler,), {"timeout": connection_timeout})

        # What wsgiref's make_server does, with our server's own argument.
        self._server = _BoundedThreadingServer((host, port), handler,
                                               max_connections=max_connections)
        self._server.set_app(app)
        self.host = host
        self.port = int(self._server.server_port)
        self._close_wait = close_wait
        self._closed = False
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        args=(poll_interval,),
                                        name="dnscache-prometheus", daemon=True)
        self._thread.start()
        log.info("Prometheus metrics on http://%s:%s/metrics", host, self.port)

    def close(self) -> None:
        """Stop accepting, end open connections, release the port. Idempotent; never waits
        on a client."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()  # the accept loop only: connections run in their own threads
        self._server.server_close()
        threads = self._server.close_connections()
        end = time.monotonic() + self._close_wait
        for t in [self._thread, *threads]:
            t.join(timeout=max(0.0, end - time.monotonic()))


def write_textfile(path: str, sample: Sample) -> None:
    """Write the node_exporter textfile collector format to `path` atomically
    (prometheus_client writes a temp file beside it and renames it)."""
    write_to_textfile(path, make_registry(lambda: sample))
