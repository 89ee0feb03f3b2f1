"""The daemon's metric sinks: adapters from the loop's one `Sample` a second to Prometheus (on
127.0.0.1), a node_exporter textfile, and CloudWatch (on its own worker thread, since its sends
retry with sleeps and the loop must keep its one-second cadence and watchdog pings)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Protocol

from ..settings import MetricsSettings
from ..stats.catalogue import Sample

if TYPE_CHECKING:
    from ..host_port import HostPort

log = logging.getLogger(__name__)

#: node_exporter scrapes every 15-60 s; rewriting the textfile every second would be waste.
TEXTFILE_EVERY_SECONDS = 10.0
#: On SIGTERM the CloudWatch worker gets this long to send the minute in progress.
FINAL_FLUSH_SECONDS = 0.5


class Sink(Protocol):
    name: str

    def export(self, sample: Sample) -> None: ...

    def close(self, *, final: bool) -> None: ...


class PrometheusSink:
    """Serves the latest sample on 127.0.0.1:`port` from prometheus_client's thread."""

    name = "prometheus"

    def __init__(self, port: int) -> None:
        from .prometheus import PrometheusServer

        self.latest: Sample | None = None
        self.server = PrometheusServer(lambda: self.latest, port)

    def export(self, sample: Sample) -> None:
        self.latest = sample

    def close(self, *, final: bool) -> None:
        # close() is bounded (it shuts idle connections too), but at exit the kernel closes
        # the sockets anyway and the SIGTERM budget is better spent on the final flush.
        if not final:
            self.server.close()


class TextfileSink:
    """Rewrites a node_exporter textfile every TEXTFILE_EVERY_SECONDS."""

    name = "textfile"

    def __init__(self, path: str, *, clock: Callable[[], float] = time.monotonic,
                 every: float = TEXTFILE_EVERY_SECONDS) -> None:
        self.path = path
        self.clock = clock
        self.every = every
        self._next = 0.0
        self._failing = False

    def export(self, sample: Sample) -> None:
        now = self.clock()
        if now < self._next:
            return
        self._next = now + self.every
        from .prometheus import write_textfile

        try:
            write_textfile(self.path, sample)
        except OSError as exc:
            if not self._failing:
                log.error("textfile %s: %s", self.path, exc.strerror or exc)
            self._failing = True
        else:
            if self._failing:
                log.info("textfile %s: writing again", self.path)
            self._failing = False

    def close(self, *, final: bool) -> None:
        pass


class CloudWatchWorker:
    """Feeds a `CloudWatchSink` on its own thread: its sends retry with sleeps, and the loop
    must keep its one-second cadence and watchdog pings. A full queue drops samples (counted)
    rather than blocking the loop."""

    name = "cloudwatch"

    def __init__(self, sink: Any, *, max_queue: int = 600, tick_every: float = 1.0) -> None:
        self.sink = sink
        self.tick_every = tick_every
        self.queue: queue.Queue[Sample | None] = queue.Queue(maxsize=max_queue)
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="dnscache-cloudwatch",
                                        daemon=True)
        self._thread.start()

    def export(self, sample: Sample) -> None:
        try:
            self.queue.put_nowait(sample)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while True:
            try:
                item = self.queue.get(timeout=self.tick_every)
            except queue.Empty:
                item = None
                stop = False
            else:
                stop = item is None
            if item is not None:
                self.sink.add(item)
            if stop:
                self.sink.flush(everything=True)
                return
            self.sink.tick()

    def close(self, *, final: bool) -> None:
        try:
            self.queue.put(None, timeout=0.1)
        except queue.Full:
            log.warning("CloudWatch: queue full at shutdown; the minute in progress is lost")
            return
        self._thread.join(FINAL_FLUSH_SECONDS if final else 30.0)
        if self._thread.is_alive():
            log.warning("CloudWatch: final flush still running after %.1fs; leaving it",
                        FINAL_FLUSH_SECONDS if final else 30.0)


def build_sinks(metrics: MetricsSettings, host: HostPort) -> list[Sink]:
    """The sinks `[metrics]` asks for. A sink that cannot start is logged and left out, so
    a taken port does not stop the cache's self-healing."""
    sinks: list[Sink] = []
    if metrics.prometheus_port:
        try:
            sinks.append(PrometheusSink(metrics.prometheus_port))
        except OSError as exc:
            log.error("Prometheus: cannot listen on 127.0.0.1:%s: %s", metrics.prometheus_port,
                      exc.strerror or exc)
    if metrics.textfile:
        sinks.append(TextfileSink(metrics.textfile))
    if metrics.cloudwatch:
        from ..imds import ImdsClient
        from .cloudwatch import build_cloudwatch_sink, resolve_fleet

        settings = host.settings
        read_tag = (ImdsClient(settings.imds.endpoint, settings.imds.timeout).instance_tag
                    if settings.imds.enabled and metrics.fleet_tag else None)
        try:
            cw = build_cloudwatch_sink(metrics, host.instance_id(),
                                       fleet=resolve_fleet(metrics, read_tag),
                                       warn_headroom_pct=settings.budget.warn_headroom_pct)
        except Exception as exc:  # boto3 raises several types for missing region/credentials
            log.error("CloudWatch: sink not started: %s", exc)
        else:
            sinks.append(CloudWatchWorker(cw))
    return sinks
