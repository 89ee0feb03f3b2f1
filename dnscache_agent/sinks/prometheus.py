"""Prometheus sink: the same catalogue figures, served on 127.0.0.1 or written as a
node_exporter textfile.

`DnscacheCollector` has the one `collect()` method prometheus_client expects; it reads the
latest `Sample` from an injected callable, so scrapes never touch bind themselves.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Callable, Optional
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

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


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        log.debug("prometheus scrape: " + format, *args)


class PrometheusServer:
    """HTTP endpoint on `host:port` (loopback by default) in a daemon thread. Port 0 picks a
    free port; read it back from `.port`. `close()` stops it."""

    def __init__(self, source: SampleSource, port: int, host: str = "127.0.0.1") -> None:
        app = make_wsgi_app(make_registry(source))
        self._server: WSGIServer = make_server(host, port, app, handler_class=_QuietHandler)
        self.host = host
        self.port = int(self._server.server_port)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="dnscache-prometheus", daemon=True)
        self._thread.start()
        log.info("Prometheus metrics on http://%s:%s/metrics", host, self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def write_textfile(path: str, sample: Sample) -> None:
    """Write the node_exporter textfile collector format to `path` atomically
    (prometheus_client writes a temp file beside it and renames it)."""
    write_to_textfile(path, make_registry(lambda: sample))
