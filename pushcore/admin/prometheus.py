"""Prometheus metrics in the text exposition format 0.0.4, with no dependency.

Two kinds of metrics live in a :class:`Registry`:

* **Instruments** the program updates as things happen: :class:`Counter`,
  :class:`Gauge`, :class:`Histogram` (optionally with labels, one child per
  label value combination). Each update takes a small lock, so they may be
  updated from any thread; use them for things that happen at human or
  admin-API rates, or that have no counter elsewhere.
* **Collectors**: functions called at scrape time that return
  :class:`MetricFamily` objects built from numbers kept elsewhere (the C
  loop's ``stats()``, the store's ``stats()``). Nothing is paid per frame:
  the loop counts in C and the collector reads the counters when
  Prometheus asks.

:meth:`Registry.render` writes everything as the text format (``# HELP``,
``# TYPE``, one sample per line); :data:`CONTENT_TYPE` is the matching
``Content-Type`` header.

Example::

    registry = Registry()
    requests = registry.counter("pushcore_admin_requests_total", "Admin API requests.",
                                labels=("path", "code"))
    requests.labels(path="/v1/push", code="200").inc()
    print(registry.render())
"""
from __future__ import annotations

import bisect
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Self, TypeVar

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_BUCKETS",
    "LATENCY_BUCKETS",
    "Counter",
    "Gauge",
    "Histogram",
    "MetricFamily",
    "Registry",
    "format_value",
    "render_families",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Prometheus client defaults (seconds).
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
# Push delivery: sub-millisecond on a LAN up to minutes for a device that was offline.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 300.0, 1800.0,
)

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_TYPES = ("counter", "gauge", "histogram", "summary", "untyped")

_M = TypeVar("_M", bound="_Metric")


def _check_metric_name(name: str) -> str:
    if not isinstance(name, str) or not _METRIC_NAME.match(name):
        raise ValueError(f"{name!r} is not a valid Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)")
    return name


def _check_label_names(labels: Iterable[str]) -> tuple[str, ...]:
    names = tuple(labels)
    for label in names:
        if not isinstance(label, str) or not _LABEL_NAME.match(label) or label.startswith("__"):
            raise ValueError(
                f"{label!r} is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate label names in {names!r}")
    return names


def format_value(value: float) -> str:
    """A sample value as the text format writes it (``+Inf``, ``-Inf``, ``NaN``, ints without ``.0``)."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _format_labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape_label_value(str(v))}"' for k, v in labels.items())
    return "{" + inner + "}"


@dataclass
class MetricFamily:
    """One metric as exposed: name, type, help text and its samples.

    ``samples`` are ``(sample name, labels, value)``; the sample name is the
    family name, or for histograms the family name plus ``_bucket``,
    ``_sum`` or ``_count``.
    """

    name: str
    type: str
    help: str
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_metric_name(self.name)
        if self.type not in _TYPES:
            raise ValueError(f"metric type must be one of {_TYPES}, got {self.type!r}")

    def add(self, value: float, labels: Mapping[str, str] | None = None, suffix: str = "") -> MetricFamily:
        """Append a sample (``suffix`` is e.g. ``"_bucket"``); returns self for chaining."""
        self.samples.append((self.name + suffix, dict(labels or {}), value))
        return self


def render_families(families: Iterable[MetricFamily]) -> str:
    """The text exposition (format 0.0.4) of *families*, ending with a newline."""
    lines: list[str] = []
    seen: set[str] = set()
    for family in families:
        if family.name in seen:
            raise ValueError(f"metric {family.name!r} is exposed twice")
        seen.add(family.name)
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for name, labels, value in family.samples:
            lines.append(f"{name}{_format_labels(labels)} {format_value(value)}")
    return "\n".join(lines) + "\n" if lines else ""


class _Metric:
    """Shared parts of the instruments: name, help, label names, children per label values."""

    type = "untyped"

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        self.name = _check_metric_name(name)
        self.help = help
        self.label_names = _check_label_names(labels)
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], Self] = {}

    def labels(self, *values: str, **by_name: str) -> Self:
        """The child for these label values (made on first use)."""
        if not self.label_names:
            raise ValueError(f"metric {self.name} has no labels")
        if values and by_name:
            raise TypeError("give label values by position or by name, not both")
        if by_name:
            if set(by_name) != set(self.label_names):
                raise ValueError(f"metric {self.name} needs exactly the labels {self.label_names}")
            values = tuple(by_name[k] for k in self.label_names)
        if len(values) != len(self.label_names):
            raise ValueError(f"metric {self.name} needs {len(self.label_names)} label values")
        key = tuple(str(v) for v in values)
        with self._lock:
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self._new_child()
            return child

    def _new_child(self) -> Self:
        raise NotImplementedError

    def _check_unlabelled(self) -> None:
        if self.label_names:
            raise ValueError(f"metric {self.name} has labels: use .labels(...) first")

    def collect(self) -> MetricFamily:
        family = MetricFamily(self.name, self.type, self.help)
        if self.label_names:
            with self._lock:
                children = sorted(self._children.items())
            for key, child in children:
                child._samples(family, dict(zip(self.label_names, key)))
        else:
            self._samples(family, {})
        return family

    def _samples(self, family: MetricFamily, labels: dict[str, str]) -> None:
        raise NotImplementedError


class Counter(_Metric):
    """A value that only goes up (name it ``..._total``)."""

    type = "counter"

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help, labels)
        self._value: float = 0

    def _new_child(self) -> Counter:
        return Counter(self.name, self.help)

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up; use a Gauge for values that go down")
        self._check_unlabelled()
        with self._lock:
            self._value += amount

    @property
    def value(self) -> float:
        return self._value

    def _samples(self, family: MetricFamily, labels: dict[str, str]) -> None:
        family.add(self._value, labels)


class Gauge(_Metric):
    """A value that goes up and down, or one read from a function at scrape time."""

    type = "gauge"

    def __init__(self, name: str, help: str, labels: Sequence[str] = (),
                 function: Callable[[], float] | None = None) -> None:
        super().__init__(name, help, labels)
        if function is not None and self.label_names:
            raise ValueError("a function gauge has no labels")
        self._value: float = 0
        self._function = function

    def _new_child(self) -> Gauge:
        return Gauge(self.name, self.help)

    def set(self, value: float) -> None:
        self._check_unlabelled()
        with self._lock:
            self._value = value

    def inc(self, amount: float = 1) -> None:
        self._check_unlabelled()
        with self._lock:
            self._value += amount

    def dec(self, amount: float = 1) -> None:
        self.inc(-amount)

    @property
    def value(self) -> float:
        return self._function() if self._function is not None else self._value

    def _samples(self, family: MetricFamily, labels: dict[str, str]) -> None:
        family.add(self.value, labels)


class Histogram(_Metric):
    """Counts of observations in cumulative buckets, with their sum and count.

    ``buckets`` are the upper bounds (``le``), ascending; ``+Inf`` is added.
    """

    type = "histogram"

    def __init__(self, name: str, help: str, labels: Sequence[str] = (),
                 buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        super().__init__(name, help, labels)
        if "le" in self.label_names:
            raise ValueError("'le' is reserved for histogram buckets")
        bounds = [float(b) for b in buckets]
        if not bounds or any(b >= c for b, c in zip(bounds, bounds[1:])):
            raise ValueError("histogram buckets must be a non-empty ascending sequence")
        if math.isinf(bounds[-1]):
            bounds.pop()
        self.buckets = tuple(bounds)
        self._counts = [0] * (len(self.buckets) + 1)  # last: above every bound (+Inf only)
        self._sum = 0.0
        self._count = 0

    def _new_child(self) -> Histogram:
        return Histogram(self.name, self.help, buckets=self.buckets)

    def observe(self, value: float) -> None:
        self._check_unlabelled()
        index = bisect.bisect_left(self.buckets, value)  # le: value <= bound goes in that bucket
        with self._lock:
            self._counts[index] += 1
            self._sum += value
            self._count += 1

    def observe_many(self, values: Iterable[float]) -> None:
        """Observe several values under one lock (cheaper for batches)."""
        self._check_unlabelled()
        buckets = self.buckets
        counts = self._counts
        with self._lock:
            for value in values:
                counts[bisect.bisect_left(buckets, value)] += 1
                self._sum += value
                self._count += 1

    @property
    def count(self) -> int:
        return self._count

    @property
    def sum(self) -> float:
        return self._sum

    def _samples(self, family: MetricFamily, labels: dict[str, str]) -> None:
        with self._lock:
            counts = list(self._counts)
            total, count = self._sum, self._count
        cumulative = 0
        for bound, n in zip(self.buckets, counts):
            cumulative += n
            family.add(cumulative, {**labels, "le": format_value(bound)}, "_bucket")
        family.add(count, {**labels, "le": "+Inf"}, "_bucket")
        family.add(total, labels, "_sum")
        family.add(count, labels, "_count")


class Registry:
    """The metrics one endpoint exposes: instruments plus scrape-time collectors."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, _Metric] = {}
        self._collectors: list[Callable[[], Iterable[MetricFamily]]] = []

    def _add(self, metric: _M) -> _M:
        with self._lock:
            if metric.name in self._metrics:
                raise ValueError(f"metric {metric.name!r} is already registered")
            self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        return self._add(Counter(name, help, labels))

    def gauge(self, name: str, help: str, labels: Sequence[str] = (),
              function: Callable[[], float] | None = None) -> Gauge:
        return self._add(Gauge(name, help, labels, function))

    def histogram(self, name: str, help: str, labels: Sequence[str] = (),
                  buckets: Sequence[float] = DEFAULT_BUCKETS) -> Histogram:
        return self._add(Histogram(name, help, labels, buckets))

    def register(self, metric: _M) -> _M:
        """Add an instrument made elsewhere."""
        return self._add(metric)

    def add_collector(self, collector: Callable[[], Iterable[MetricFamily]]) -> None:
        """Call *collector* at every scrape; it returns the families it exposes."""
        with self._lock:
            self._collectors.append(collector)

    def collect(self) -> list[MetricFamily]:
        """Every family, instruments first, then each collector's, in registration order."""
        with self._lock:
            metrics = list(self._metrics.values())
            collectors = list(self._collectors)
        families = [m.collect() for m in metrics]
        for collector in collectors:
            families.extend(collector())
        return families

    def render(self) -> str:
        """The text exposition format 0.0.4 of :meth:`collect`."""
        return render_families(self.collect())
