"""CloudWatch sink: one-second samples → one-minute StatisticSets → PutMetricData.

* Aggregation: each catalogue metric with a CloudWatch name becomes one datum per period
  (SampleCount/Sum/Minimum/Maximum), so Maximum is the minute's peak second.
* Dimensions: `InstanceId`, plus `Interface` for per-interface metrics (budget and ENA).
* What is sent (`Selection`, issue 13): CloudWatch bills per distinct series, so per instance
  only the catalogue's `default` set plus `[metrics] cloudwatch_include`; fleet aggregates with
  `Fleet` as the only dimension (every host's StatisticSet lands in the same series, which
  CloudWatch merges); and the full per-instance detail for the periods during which an
  interface's headroom was under the warning threshold (`TroubleDetector`, with hysteresis).
* Sending: once a minute, at a random offset (jitter) after the minute ends, so a fleet does
  not call the API in the same second.
* Limits are checked here, not left to the service: the local emulator (moto) accepts what AWS
  rejects (1001 datums, 31 dimensions, StorageResolution 7, `AWS/` namespaces).
* Retries: only throttling and HTTP 5xx, capped exponential backoff with full jitter. Connection
  failures keep the data buffered for the next minute; other client errors drop the batch.
* The buffer is bounded: when CloudWatch stays unreachable the oldest datums are dropped and
  counted. Nothing here raises out of `add()`/`tick()`/`flush()`.

boto3 does the signing and finds credentials; the client is injectable.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import random as _random
import re
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlencode

from ..errors import ConfigError, DnscacheError
from ..settings import MetricsSettings
from ..stats.budget import DEFAULT_HYSTERESIS_PCT, DEFAULT_WARN_HEADROOM_PCT
from ..stats.catalogue import (
    BY_KEY,
    CATALOGUE,
    DEFAULT,
    FLEET,
    HOST,
    OPT_IN,
    Metric,
    Sample,
)

log = logging.getLogger(__name__)

# --- PutMetricData limits (AWS documentation) ------------------------------------------------
MAX_DATUMS_PER_CALL = 1000
#: The request payload limit is 1 MB; sizes are measured as the query-protocol form body, the
#: largest of the encodings botocore may use, so any protocol fits.
MAX_PAYLOAD_BYTES = 1_000_000
MAX_DIMENSIONS = 30
MAX_NAME_CHARS = 255
MAX_DIMENSION_VALUE_CHARS = 1024
STORAGE_RESOLUTIONS = (1, 60)
VALUE_MIN_MAGNITUDE = 8.515920e-109
VALUE_MAX_MAGNITUDE = 1.174271e108
MAX_AGE_SECONDS = 14 * 24 * 3600
MAX_FUTURE_SECONDS = 2 * 3600
UNITS = frozenset((
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
    "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
    "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second",
    "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second",
    "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
))
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9.\-_/#:]{1,255}$")
THROTTLING_CODES = frozenset((
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "RequestLimitExceeded", "RequestThrottled", "SlowDown",
))


class CloudWatchLimitError(DnscacheError):
    """A datum or batch breaks a PutMetricData limit (names the limit)."""


def validate_namespace(namespace: str) -> str:
    """Raises ConfigError for names CloudWatch rejects, including the reserved `AWS/`."""
    if not isinstance(namespace, str) or not _NAMESPACE_RE.fullmatch(namespace):
        raise ConfigError(f"metrics namespace {str(namespace)[:60]!r}: 1-255 characters of "
                          "letters, digits and . - _ / # :")
    if namespace.startswith("AWS/"):
        raise ConfigError(f"metrics namespace {namespace!r}: names starting with 'AWS/' are "
                          "reserved for AWS services")
    return namespace


@dataclass(frozen=True)
class Datum:
    """One StatisticSet for one metric, dimension set and period."""

    name: str
    dimensions: tuple[tuple[str, str], ...]
    timestamp: float
    unit: str
    sample_count: float
    total: float
    minimum: float
    maximum: float
    storage_resolution: int = 60

    def to_api(self) -> dict[str, Any]:
        return {
            "MetricName": self.name,
            "Dimensions": [{"Name": k, "Value": v} for k, v in self.dimensions],
            "Timestamp": dt.datetime.fromtimestamp(self.timestamp, tz=dt.timezone.utc),
            "StatisticValues": {"SampleCount": self.sample_count, "Sum": self.total,
                                "Minimum": self.minimum, "Maximum": self.maximum},
            "Unit": self.unit,
            "StorageResolution": self.storage_resolution,
        }


def _check_value(what: str, value: float) -> None:
    if not math.isfinite(value):
        raise CloudWatchLimitError(f"{what} is not a finite number")
    mag = abs(value)
    if mag != 0 and not VALUE_MIN_MAGNITUDE <= mag <= VALUE_MAX_MAGNITUDE:
        raise CloudWatchLimitError(f"{what}={value!r} is outside CloudWatch's value range")


def validate_datum(d: Datum, now: float) -> None:
    """Raises CloudWatchLimitError naming the first limit `d` breaks."""
    if not 1 <= len(d.name) <= MAX_NAME_CHARS:
        raise CloudWatchLimitError(f"metric name length {len(d.name)} not in 1..255")
    if len(d.dimensions) > MAX_DIMENSIONS:
        raise CloudWatchLimitError(f"{d.name}: {len(d.dimensions)} dimensions, limit is "
                                   f"{MAX_DIMENSIONS}")
    names = [k for k, _ in d.dimensions]
    if len(set(names)) != len(names):
        raise CloudWatchLimitError(f"{d.name}: duplicate dimension names")
    for k, v in d.dimensions:
        if not 1 <= len(k) <= MAX_NAME_CHARS or not 1 <= len(v) <= MAX_DIMENSION_VALUE_CHARS:
            raise CloudWatchLimitError(f"{d.name}: dimension {k[:40]!r} name or value length "
                                       "out of range")
    if d.storage_resolution not in STORAGE_RESOLUTIONS:
        raise CloudWatchLimitError(f"{d.name}: StorageResolution {d.storage_resolution} is "
                                   "neither 1 nor 60")
    if d.unit not in UNITS:
        raise CloudWatchLimitError(f"{d.name}: unknown unit {d.unit!r}")
    if not d.sample_count > 0:
        raise CloudWatchLimitError(f"{d.name}: SampleCount must be positive")
    for what, value in (("SampleCount", d.sample_count), ("Sum", d.total),
                        ("Minimum", d.minimum), ("Maximum", d.maximum)):
        _check_value(f"{d.name} {what}", value)
    if d.minimum > d.maximum:
        raise CloudWatchLimitError(f"{d.name}: Minimum above Maximum")
    if d.timestamp < now - MAX_AGE_SECONDS or d.timestamp > now + MAX_FUTURE_SECONDS:
        raise CloudWatchLimitError(f"{d.name}: timestamp outside [-14 days, +2 hours]")


def _form_fields(namespace: str, data: Sequence[Datum]) -> list[tuple[str, str]]:
    out = [("Action", "PutMetricData"), ("Version", "2010-08-01"), ("Namespace", namespace)]
    for i, d in enumerate(data, 1):
        p = f"MetricData.member.{i}."
        out.append((p + "MetricName", d.name))
        for j, (k, v) in enumerate(d.dimensions, 1):
            out.append((f"{p}Dimensions.member.{j}.Name", k))
            out.append((f"{p}Dimensions.member.{j}.Value", v))
        out.append((p + "Timestamp", dt.datetime.fromtimestamp(
            d.timestamp, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")))
        for key, value in (("SampleCount", d.sample_count), ("Sum", d.total),
                           ("Minimum", d.minimum), ("Maximum", d.maximum)):
            out.append((f"{p}StatisticValues.{key}", repr(float(value))))
        out.append((p + "Unit", d.unit))
        out.append((p + "StorageResolution", str(d.storage_resolution)))
    return out


def payload_size(namespace: str, data: Sequence[Datum]) -> int:
    """Bytes of the PutMetricData request body in the query protocol (an upper bound)."""
    return len(urlencode(_form_fields(namespace, data)))


def _datum_size(d: Datum) -> int:
    return len(urlencode(_form_fields("", [d]))) - len(urlencode(_form_fields("", [])))


def validate_batch(namespace: str, data: Sequence[Datum], now: float) -> None:
    """Raises CloudWatchLimitError if the batch as one PutMetricData call breaks a limit."""
    validate_namespace(namespace)
    if not data:
        raise CloudWatchLimitError("empty batch")
    if len(data) > MAX_DATUMS_PER_CALL:
        raise CloudWatchLimitError(f"{len(data)} datums in one call, limit is "
                                   f"{MAX_DATUMS_PER_CALL}")
    size = payload_size(namespace, data)
    if size > MAX_PAYLOAD_BYTES:
        raise CloudWatchLimitError(f"payload {size} bytes, limit is {MAX_PAYLOAD_BYTES}")
    for d in data:
        validate_datum(d, now)


def make_batches(namespace: str, data: Iterable[Datum], *,
                 max_datums: int = MAX_DATUMS_PER_CALL,
                 max_bytes: int = MAX_PAYLOAD_BYTES) -> list[list[Datum]]:
    """Split datums into calls within the datum-count and payload-size limits."""
    header = payload_size(namespace, [])
    batches: list[list[Datum]] = []
    current: list[Datum] = []
    size = header
    for d in data:
        dsize = _datum_size(d) + 16  # member index digits grow; keep a margin
        if current and (len(current) >= max_datums or size + dsize > max_bytes):
            batches.append(current)
            current, size = [], header
        current.append(d)
        size += dsize
    if current:
        batches.append(current)
    return batches


@dataclass(frozen=True)
class Selection:
    """Which catalogue metrics are sent, and with which dimensions (issue 13). Pure.

    * `always`: per instance (`InstanceId`, plus `Interface`), every period.
    * `on_trouble`: per instance, only in periods during which the `TroubleDetector` was on.
    * `fleet`: once per fleet, with `Fleet` as the only dimension, every period, when
      `fleet_name` is set. Every host sends its StatisticSet under the same dimensions and
      CloudWatch merges them, so these cost the same for 10 or 10,000 hosts.
    """

    always: frozenset[str]
    on_trouble: frozenset[str] = frozenset()
    fleet: frozenset[str] = frozenset()
    fleet_name: str | None = None

    @classmethod
    def from_settings(cls, include: Iterable[str] = (), fleet_name: str | None = None, *,
                      metrics: Sequence[Metric] = CATALOGUE) -> Selection:
        """The catalogue's `default` set plus `include` always; every other CloudWatch metric
        not marked opt-in while in trouble; the `fleet` set when `fleet_name` is given.
        Raises ConfigError for a name that is not a CloudWatch metric of the catalogue."""
        cw = {m.key: m for m in metrics if m.cloudwatch_name}
        unknown = [k for k in include if k not in cw]
        if unknown:
            raise ConfigError(f"metrics.cloudwatch_include: unknown CloudWatch metric "
                              f"{unknown[0]!r}")
        always = {k for k, m in cw.items() if DEFAULT in m.cloudwatch_send} | set(include)
        trouble = {k for k, m in cw.items() if OPT_IN not in m.cloudwatch_send} - always
        fleet = {k for k, m in cw.items() if FLEET in m.cloudwatch_send} if fleet_name else set()
        return cls(frozenset(always), frozenset(trouble), frozenset(fleet), fleet_name or None)

    @classmethod
    def everything(cls, *, metrics: Sequence[Metric] = CATALOGUE) -> Selection:
        """Every CloudWatch metric per instance, always (the agent's behaviour before the
        default set; what `cloudwatch_include` naming every metric gives)."""
        return cls(frozenset(m.key for m in metrics if m.cloudwatch_name))


#: Detail stays on until the headroom has been back above warn + hysteresis this long.
DEFAULT_TROUBLE_HOLD_SECONDS = 120.0


class TroubleDetector:
    """Decides, one sample at a time, whether the instance is "in trouble": some interface's
    budget headroom is under `warn_pct`. Hysteresis keeps a budget hovering at the threshold
    from flapping the detail on and off: an interface leaves trouble only after its headroom
    has stayed at or above `warn_pct + hysteresis_pct` for `hold_seconds` (sample time)."""

    def __init__(self, warn_pct: float = DEFAULT_WARN_HEADROOM_PCT, *,
                 hysteresis_pct: float = DEFAULT_HYSTERESIS_PCT,
                 hold_seconds: float = DEFAULT_TROUBLE_HOLD_SECONDS) -> None:
        if hysteresis_pct < 0 or hold_seconds < 0:
            raise ConfigError("trouble detector: hysteresis and hold time must be >= 0")
        self.warn_pct = warn_pct
        self.recover_pct = warn_pct + hysteresis_pct
        self.hold_seconds = hold_seconds
        self._troubled: dict[str, float | None] = {}  # interface -> recovering since

    @property
    def active(self) -> bool:
        return bool(self._troubled)

    @property
    def interfaces(self) -> tuple[str, ...]:
        return tuple(sorted(self._troubled))

    def update(self, sample: Sample) -> bool:
        """Feed one sample; returns whether detail is on for it. Interfaces without a
        headroom figure this second keep their state."""
        for iface, values in sample.interfaces.items():
            ratio = values.get("budget_headroom")
            if ratio is None or not math.isfinite(ratio):
                continue
            pct = ratio * 100.0
            if iface not in self._troubled:
                if pct < self.warn_pct:
                    self._troubled[iface] = None
                    log.info("CloudWatch: %s headroom %.0f%% under %.0f%%: sending full "
                             "per-instance detail", iface, pct, self.warn_pct)
                continue
            if pct < self.recover_pct:
                self._troubled[iface] = None
                continue
            since = self._troubled[iface]
            if since is None:
                self._troubled[iface] = since = sample.timestamp
            if sample.timestamp - since >= self.hold_seconds:
                del self._troubled[iface]
                log.info("CloudWatch: %s headroom back above %.0f%% for %.0fs: detail off",
                         iface, self.recover_pct, self.hold_seconds)
        return self.active


_Key = tuple[str, tuple[tuple[str, str], ...], float]


class MinuteAggregator:
    """Folds one-second `Sample`s into per-period StatisticSets keyed by metric, dimensions and
    period start. Only metrics with a CloudWatch name are kept; `selection` decides which are
    sent per instance (always or in trouble) and which per fleet. Without a selection every
    metric is sent per instance, always."""

    def __init__(self, instance_id: str, *, period: int = 60, high_resolution: bool = False,
                 metrics: Sequence[Metric] = CATALOGUE, selection: Selection | None = None,
                 trouble: TroubleDetector | None = None) -> None:
        if period <= 0 or 60 % period:
            raise ConfigError(f"CloudWatch aggregation period {period}: must divide 60")
        self.instance_id = instance_id
        self.period = period
        self.resolution = 1 if high_resolution else 60
        self.selection = selection or Selection.everything(metrics=metrics)
        self.trouble = trouble or TroubleDetector()
        sel = self.selection
        self.metrics = [m for m in metrics if m.cloudwatch_name
                        and m.key in sel.always | sel.on_trouble]
        self.fleet_metrics = ([m for m in metrics if m.cloudwatch_name and m.key in sel.fleet]
                              if sel.fleet_name else [])
        self._acc: dict[_Key, list[float]] = {}
        self._units: dict[str, str] = {m.cloudwatch_name or "": m.cloudwatch_unit
                                       for m in metrics if m.cloudwatch_name}
        self._key_of: dict[str, str] = {m.cloudwatch_name or "": m.key
                                        for m in metrics if m.cloudwatch_name}
        #: Period starts during which the trouble detector was on (full detail sent).
        self._detailed: set[float] = set()

    def _add(self, name: str, dims: tuple[tuple[str, str], ...], start: float,
             value: float) -> None:
        key = (name, dims, start)
        acc = self._acc.get(key)
        if acc is None:
            self._acc[key] = [1.0, value, value, value]
        else:
            acc[0] += 1
            acc[1] += value
            acc[2] = min(acc[2], value)
            acc[3] = max(acc[3], value)

    def _fold(self, metrics: Sequence[Metric], sample: Sample, start: float,
              dims: tuple[tuple[str, str], ...], per_interface: bool) -> None:
        for m in metrics:
            name = m.cloudwatch_name or ""
            if m.scope == HOST:
                value = sample.host.get(m.key)
                if value is not None and math.isfinite(value):
                    self._add(name, dims, start, value * m.cloudwatch_scale)
                continue
            for iface, values in sample.interfaces.items():
                value = values.get(m.key)
                if value is not None and math.isfinite(value):
                    self._add(name, dims + ((("Interface", iface),) if per_interface else ()),
                              start, value * m.cloudwatch_scale)

    def add(self, sample: Sample) -> None:
        start = sample.timestamp - (sample.timestamp % self.period)
        if self.trouble.update(sample):
            self._detailed.add(start)
        self._fold(self.metrics, sample, start, (("InstanceId", self.instance_id),), True)
        if self.fleet_metrics and self.selection.fleet_name:
            # One series per fleet: interfaces fold together, CloudWatch merges the hosts.
            self._fold(self.fleet_metrics, sample, start,
                       (("Fleet", self.selection.fleet_name),), False)

    def detailed(self, start: float) -> bool:
        """Whether the period starting at `start` had trouble (so sends full detail)."""
        return start in self._detailed

    def pop_complete(self, now: float) -> list[Datum]:
        """Datums for periods that ended at or before `now`, oldest first."""
        return self._pop(lambda start: start + self.period <= now)

    def pop_all(self) -> list[Datum]:
        return self._pop(lambda start: True)

    def _wanted(self, name: str, dims: tuple[tuple[str, str], ...], start: float) -> bool:
        if dims and dims[0][0] == "Fleet":
            return True
        key = self._key_of[name]
        return key in self.selection.always or (key in self.selection.on_trouble
                                                and start in self._detailed)

    def _pop(self, done: Callable[[float], bool]) -> list[Datum]:
        keys = sorted((k for k in self._acc if done(k[2])), key=lambda k: (k[2], k[0], k[1]))
        out = []
        for key in keys:
            count, total, lo, hi = self._acc.pop(key)
            name, dims, start = key
            if self._wanted(name, dims, start):
                out.append(Datum(name, dims, start, self._units[name], count, total, lo, hi,
                                 self.resolution))
        self._detailed = {start for start in self._detailed if not done(start)}
        return out


@dataclass
class SinkCounters:
    """What happened to datums so far (for logs, `stats --json` and tests)."""

    sent: int = 0
    dropped: int = 0       # oldest datums evicted from the full buffer, or too old to send
    rejected: int = 0      # refused by the agent's own validation or a 4xx from the API
    retries: int = 0
    throttled: int = 0
    failed_flushes: int = 0


def build_client(*, region: str | None = None, endpoint_url: str | None = None,
                 connect_timeout: float = 3.0, read_timeout: float = 10.0,
                 session: Any = None) -> Any:
    """A boto3 CloudWatch client with botocore's own retries off (this module retries).

    `region` None means botocore's own lookup (AWS_REGION, AWS_DEFAULT_REGION, the profile).
    Raises ConfigError naming metrics.region when there is no region at all (off EC2, none
    set), and CloudWatchError for any other failure to build the client (a missing profile,
    an endpoint botocore refuses): one line each, never botocore's traceback."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, NoRegionError

    from ..errors import CloudWatchError

    config = Config(retries={"total_max_attempts": 1}, connect_timeout=connect_timeout,
                    read_timeout=read_timeout)
    no_region = ConfigError("metrics.region: no AWS region (not on EC2, so IMDS gave none, and "
                            "AWS_REGION/AWS_DEFAULT_REGION are unset): set metrics.region in "
                            "the settings file, e.g. region = \"eu-west-1\"")
    try:
        boto_session = session if session is not None else boto3.session.Session()
        # Checked before the client exists: building it looks up credentials, and botocore's
        # last resort for those is the real IMDS at 169.254.169.254, which the agent has
        # already found absent (or been told to reach elsewhere).
        if not (region or boto_session.region_name):
            raise no_region
        return boto_session.client(
            "cloudwatch", region_name=region or None, endpoint_url=endpoint_url or None,
            config=config)
    except NoRegionError:
        raise no_region from None
    except (BotoCoreError, ValueError) as exc:
        raise CloudWatchError(f"CloudWatch client (region {region or 'unset'}, endpoint "
                              f"{endpoint_url or 'default'}): "
                              f"{' '.join(str(exc).split())[:200]}") from None


def _classify(exc: BaseException) -> str:
    """"retry" (throttling, 5xx), "reject" (other API errors), or "unreachable"."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0
        if code in THROTTLING_CODES or status == 429 or status >= 500:
            return "retry"
        return "reject"
    return "unreachable"


class CloudWatchSink:
    """Aggregates samples and ships them once a period. Call `add()` every second and
    `tick()` as often as convenient; `flush()` sends now. None of them raise."""

    def __init__(self, namespace: str, instance_id: str, *, client: Any = None,
                 region: str | None = None, endpoint_url: str | None = None,
                 high_resolution: bool = False, period: int = 60,
                 buffer_limit: int = 20_000, max_attempts: int = 5,
                 base_delay: float = 0.5, max_delay: float = 10.0,
                 jitter_seconds: float = 15.0,
                 selection: Selection | None = None,
                 trouble: TroubleDetector | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 random: Callable[[], float] = _random.random,
                 clock: Callable[[], float] = time.time) -> None:
        self.namespace = validate_namespace(namespace)
        if not instance_id:
            raise ConfigError("CloudWatch sink: an InstanceId dimension value is required")
        if buffer_limit < 1 or max_attempts < 1:
            raise ConfigError("CloudWatch sink: buffer_limit and max_attempts must be >= 1")
        self.client = client if client is not None else build_client(
            region=region, endpoint_url=endpoint_url)
        self.aggregator = MinuteAggregator(instance_id, period=period,
                                           high_resolution=high_resolution,
                                           selection=selection, trouble=trouble)
        self.buffer: deque[Datum] = deque()
        self.buffer_limit = buffer_limit
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.jitter_seconds = jitter_seconds
        self.sleep = sleep
        self.random = random
        self.clock = clock
        self.period = period
        self.counters = SinkCounters()
        self.next_send = self._schedule(clock())

    def _schedule(self, now: float) -> float:
        boundary = now - (now % self.period) + self.period
        return boundary + self.random() * self.jitter_seconds

    def add(self, sample: Sample) -> None:
        try:
            self.aggregator.add(sample)
        except Exception:  # never let a bad sample stop the agent
            log.exception("CloudWatch: could not aggregate a sample")

    def tick(self, now: float | None = None) -> bool:
        """Flush if the jittered send time has come. Returns True if a flush ran."""
        now = self.clock() if now is None else now
        if now < self.next_send:
            return False
        self.flush(now)
        self.next_send = self._schedule(now)
        return True

    def _enqueue(self, data: Iterable[Datum]) -> None:
        for d in data:
            if len(self.buffer) >= self.buffer_limit:
                self.buffer.popleft()
                self.counters.dropped += 1
            self.buffer.append(d)

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
        return self.random() * min(self.max_delay, self.base_delay * (2 ** attempt))

    def flush(self, now: float | None = None, *, everything: bool = False) -> int:
        """Move finished periods to the buffer and send it. `everything` also sends the
        period in progress (on shutdown). Returns datums sent; never raises."""
        try:
            return self._flush(self.clock() if now is None else now, everything)
        except Exception:
            self.counters.failed_flushes += 1
            log.exception("CloudWatch: flush failed; data kept for the next attempt")
            return 0

    def _flush(self, now: float, everything: bool) -> int:
        self._enqueue(self.aggregator.pop_all() if everything
                      else self.aggregator.pop_complete(now))
        valid: list[Datum] = []
        while self.buffer:
            d = self.buffer.popleft()
            try:
                validate_datum(d, now)
            except CloudWatchLimitError as exc:
                if d.timestamp < now - MAX_AGE_SECONDS:
                    self.counters.dropped += 1
                else:
                    self.counters.rejected += 1
                log.warning("CloudWatch: dropping datum: %s", exc)
                continue
            valid.append(d)
        sent = 0
        batches = make_batches(self.namespace, valid)
        for i, batch in enumerate(batches):
            outcome = self._send(batch, now)
            if outcome == "sent":
                sent += len(batch)
            elif outcome == "keep":
                # Put this batch and everything after it back, oldest first.
                rest = [d for b in batches[i:] for d in b]
                self.buffer.extendleft(reversed(rest))
                while len(self.buffer) > self.buffer_limit:
                    self.buffer.popleft()
                    self.counters.dropped += 1
                self.counters.failed_flushes += 1
                break
        return sent

    def _send(self, batch: list[Datum], now: float) -> str:
        """"sent", "rejected" (batch dropped) or "keep" (keep buffered for later)."""
        try:
            validate_batch(self.namespace, batch, now)
        except CloudWatchLimitError as exc:
            log.error("CloudWatch: batch breaks a PutMetricData limit, dropped: %s", exc)
            self.counters.rejected += len(batch)
            return "rejected"
        payload = [d.to_api() for d in batch]
        for attempt in range(self.max_attempts):
            try:
                self.client.put_metric_data(Namespace=self.namespace, MetricData=payload)
            except Exception as exc:  # botocore raises many types; classify, never crash
                kind = _classify(exc)
                if kind == "reject":
                    log.error("CloudWatch rejected %d datums: %s", len(batch), exc)
                    self.counters.rejected += len(batch)
                    return "rejected"
                if kind == "unreachable":
                    log.warning("CloudWatch unreachable (%s); %d datums buffered",
                                type(exc).__name__, len(self.buffer) + len(batch))
                    return "keep"
                self.counters.throttled += 1
                if attempt + 1 >= self.max_attempts:
                    log.warning("CloudWatch still throttling after %d attempts; data kept",
                                self.max_attempts)
                    return "keep"
                delay = self.backoff(attempt)
                self.counters.retries += 1
                log.info("CloudWatch throttled (%s); retry in %.1fs", exc, delay)
                self.sleep(delay)
                continue
            self.counters.sent += len(batch)
            log.debug("CloudWatch: sent %d datums", len(batch))
            return "sent"
        return "keep"  # pragma: no cover - loop always returns


def resolve_fleet(metrics: MetricsSettings,
                  read_tag: Callable[[str], str | None] | None = None) -> str | None:
    """The `Fleet` dimension value: `[metrics] fleet`, else the value of the instance tag
    `[metrics] fleet_tag` read with `read_tag` (e.g. `ImdsClient.instance_tag`), else None
    (no fleet aggregates). A tag that cannot be read or is not a valid dimension value is
    logged once and gives None; this never raises."""
    if metrics.fleet:
        return metrics.fleet
    if not metrics.fleet_tag:
        return None
    value = read_tag(metrics.fleet_tag) if read_tag is not None else None
    if not value:
        log.warning("CloudWatch: instance tag %r not readable from IMDS (tags exposed in "
                    "instance metadata? InstanceMetadataTags=enabled): no fleet aggregates",
                    metrics.fleet_tag)
        return None
    if len(value) > MAX_DIMENSION_VALUE_CHARS or not value.isprintable():
        log.warning("CloudWatch: instance tag %r is not a valid dimension value: no fleet "
                    "aggregates", metrics.fleet_tag)
        return None
    return value


def build_cloudwatch_sink(metrics: MetricsSettings, instance_id: str, *, fleet: str | None,
                          warn_headroom_pct: float = DEFAULT_WARN_HEADROOM_PCT,
                          client: Any = None, clock: Callable[[], float] = time.time,
                          **kwargs: Any) -> CloudWatchSink:
    """The sink `[metrics]` asks for: the default set plus `cloudwatch_include` per instance,
    full detail while an interface's headroom is under `warn_headroom_pct` (`[budget]`), and
    fleet aggregates under `fleet` (from `resolve_fleet`). Raises ConfigError for bad
    settings; boto3 may raise for a missing region or credentials (the caller logs those)."""
    selection = Selection.from_settings(metrics.cloudwatch_include, fleet)
    return CloudWatchSink(metrics.namespace, instance_id, client=client,
                          region=metrics.region or None,
                          endpoint_url=metrics.endpoint_url or None,
                          high_resolution=metrics.high_resolution, selection=selection,
                          trouble=TroubleDetector(warn_headroom_pct), clock=clock, **kwargs)


def _check_alarm_args(namespace: str, threshold_pct: float, period: int,
                      evaluation_periods: int, treat_missing_data: str) -> None:
    validate_namespace(namespace)
    if not 0 < threshold_pct <= 100:
        raise ConfigError(f"alarm threshold {threshold_pct}: must be in (0, 100]")
    if period not in (10, 30) and (period < 60 or period % 60):
        raise ConfigError(f"alarm period {period}: must be 10, 30 or a multiple of 60")
    if evaluation_periods < 1:
        raise ConfigError("alarm evaluation periods must be >= 1")
    if treat_missing_data not in ("breaching", "notBreaching", "ignore", "missing"):
        raise ConfigError(f"treat_missing_data {treat_missing_data!r} is not valid")


def create_fleet_headroom_alarm(client: Any, namespace: str, fleet: str, *,
                                threshold_pct: float = 20.0, period: int = 60,
                                evaluation_periods: int = 3,
                                alarm_actions: Sequence[str] = (),
                                ok_actions: Sequence[str] = (),
                                alarm_name: str | None = None) -> str:
    """Put an alarm on the fleet aggregate: the lowest one-second headroom of any interface of
    any host in `fleet` (`BudgetHeadroom` Minimum, dimension `Fleet` only). One alarm for the
    whole fleet, whatever its size. Returns the alarm name; ConfigError for bad arguments."""
    _check_alarm_args(namespace, threshold_pct, period, evaluation_periods, "notBreaching")
    if not fleet or len(fleet) > MAX_DIMENSION_VALUE_CHARS or not fleet.isprintable():
        raise ConfigError(f"alarm fleet {fleet[:60]!r}: 1-1024 printable characters")
    metric = BY_KEY["budget_headroom"]
    name = alarm_name or f"dnscache-fleet-{fleet}-budget-headroom"
    if len(name) > MAX_NAME_CHARS:
        raise ConfigError(f"alarm name {name[:60]!r}...: longer than {MAX_NAME_CHARS}")
    client.put_metric_alarm(
        AlarmName=name,
        AlarmDescription=(f"Some host of fleet {fleet[:200]} sends upstream DNS packets leaving "
                          f"less than {threshold_pct:g}% of an interface's limit "
                          "(dnscache-agent)"),
        Namespace=namespace,
        MetricName=metric.cloudwatch_name,
        Dimensions=[{"Name": "Fleet", "Value": fleet}],
        Statistic="Minimum",
        Period=period,
        EvaluationPeriods=evaluation_periods,
        DatapointsToAlarm=evaluation_periods,
        Threshold=float(threshold_pct),
        ComparisonOperator="LessThanThreshold",
        # No data means no host sent a minute: not a budget problem (hosts stop, fleets shrink).
        TreatMissingData="notBreaching",
        Unit=metric.cloudwatch_unit,
        ActionsEnabled=bool(alarm_actions or ok_actions),
        AlarmActions=list(alarm_actions),
        OKActions=list(ok_actions),
    )
    log.info("CloudWatch alarm %s put on %s/%s Fleet=%s", name, namespace,
             metric.cloudwatch_name, fleet)
    return name


def create_headroom_alarm(client: Any, namespace: str, instance_id: str, interface: str, *,
                          threshold_pct: float = 20.0, period: int = 60,
                          evaluation_periods: int = 3, datapoints_to_alarm: int | None = None,
                          alarm_actions: Sequence[str] = (), ok_actions: Sequence[str] = (),
                          treat_missing_data: str = "missing",
                          alarm_name: str | None = None) -> str:
    """Put (create or update) an alarm on the minute's lowest budget headroom of one interface.
    Returns the alarm name. Raises ConfigError for invalid arguments; API errors propagate as
    botocore exceptions for the CLI to report."""
    _check_alarm_args(namespace, threshold_pct, period, evaluation_periods, treat_missing_data)
    metric = BY_KEY["budget_headroom"]
    name = alarm_name or f"dnscache-{instance_id}-{interface}-budget-headroom"
    client.put_metric_alarm(
        AlarmName=name,
        AlarmDescription=(f"Upstream DNS packets on {interface} leave less than "
                          f"{threshold_pct:g}% of the per-interface limit (dnscache-agent)"),
        Namespace=namespace,
        MetricName=metric.cloudwatch_name,
        Dimensions=[{"Name": "InstanceId", "Value": instance_id},
                    {"Name": "Interface", "Value": interface}],
        Statistic="Minimum",
        Period=period,
        EvaluationPeriods=evaluation_periods,
        DatapointsToAlarm=datapoints_to_alarm or evaluation_periods,
        Threshold=float(threshold_pct),
        ComparisonOperator="LessThanThreshold",
        TreatMissingData=treat_missing_data,
        Unit=metric.cloudwatch_unit,
        ActionsEnabled=bool(alarm_actions or ok_actions),
        AlarmActions=list(alarm_actions),
        OKActions=list(ok_actions),
    )
    log.info("CloudWatch alarm %s put on %s/%s", name, namespace, metric.cloudwatch_name)
    return name
