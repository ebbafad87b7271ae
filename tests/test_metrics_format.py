"""pushcore.admin.prometheus writes the Prometheus text format 0.0.4: checked by a strict parser.

``parse_exposition`` below is an independent reader of the format (it does
not use pushcore.admin.prometheus) that refuses anything the format does not allow;
the admin API tests use it too.
"""
from __future__ import annotations

import math
import re
import threading

import pytest

from pushcore.admin.prometheus import (
    CONTENT_TYPE,
    Counter,
    Histogram,
    MetricFamily,
    Registry,
    format_value,
    render_families,
)

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
_SAMPLE = re.compile(rf"^({_NAME})(\{{(.*)\}})? (\S+)( -?\d+)?$")
_VALUE = re.compile(r"^(NaN|[+-]Inf|[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)$")


def _parse_labels(text: str, line: str) -> dict:
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        m = re.compile(rf"({_LABEL})=\"").match(text, pos)
        assert m, f"bad label at {text[pos:]!r} in {line!r}"
        name = m.group(1)
        pos = m.end()
        value = []
        while True:
            assert pos < len(text), f"unterminated label value in {line!r}"
            ch = text[pos]
            if ch == "\\":
                nxt = text[pos + 1]
                assert nxt in '\\"n', f"bad escape \\{nxt} in {line!r}"
                value.append({"\\": "\\", '"': '"', "n": "\n"}[nxt])
                pos += 2
            elif ch == '"':
                pos += 1
                break
            else:
                assert ch != "\n"
                value.append(ch)
                pos += 1
        assert name not in labels, f"label {name} twice in {line!r}"
        labels[name] = "".join(value)
        if pos < len(text):
            assert text[pos] == ",", f"expected ',' in {line!r}"
            pos += 1
    return labels


def _value(text: str, line: str) -> float:
    assert _VALUE.match(text), f"bad sample value {text!r} in {line!r}"
    return float(text.replace("Inf", "inf"))


def parse_exposition(text: str) -> dict:
    """``{family name: {"type", "help", "samples": [(name, labels, value)]}}``; asserts on any error.

    Checks: every line is HELP, TYPE or a sample; TYPE comes before the
    family's samples and once; a family's samples are contiguous; sample
    names belong to their family (histograms: _bucket/_sum/_count); no
    sample (name + labels) twice; histogram buckets ascend in ``le``, are
    cumulative and end at ``+Inf`` equal to ``_count``; counters are >= 0.
    """
    assert text.endswith("\n"), "the exposition must end with a newline"
    families: dict[str, dict] = {}
    current = None
    seen_samples: set = set()
    for line in text[:-1].split("\n"):
        assert line, "empty line"
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert re.fullmatch(_NAME, name), line
            fam = families.setdefault(name, {"type": None, "help": None, "samples": []})
            assert fam["help"] is None and not fam["samples"], f"HELP after samples or twice: {line}"
            fam["help"] = help_text.replace("\\n", "\n").replace("\\\\", "\\")
            current = name
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            fam = families.setdefault(name, {"type": None, "help": None, "samples": []})
            assert fam["type"] is None and not fam["samples"], f"TYPE after samples or twice: {line}"
            fam["type"] = kind
            current = name
        elif line.startswith("#"):
            continue
        else:
            m = _SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            sample_name, labels_text, value_text = m.group(1), m.group(3), m.group(4)
            labels = _parse_labels(labels_text, line) if labels_text else {}
            value = _value(value_text, line)
            assert current is not None, f"sample before any TYPE: {line}"
            fam = families[current]
            kind = fam["type"]
            allowed = {current}
            if kind == "histogram":
                allowed = {current + "_bucket", current + "_sum", current + "_count"}
            assert sample_name in allowed, f"sample {sample_name} outside its family {current}"
            key = (sample_name, tuple(sorted(labels.items())))
            assert key not in seen_samples, f"duplicate sample {line}"
            seen_samples.add(key)
            if kind == "counter":
                assert value >= 0, f"negative counter {line}"
            fam["samples"].append((sample_name, labels, value))
    for name, fam in families.items():
        assert fam["type"] is not None, f"family {name} has no TYPE"
        if fam["type"] == "histogram":
            _check_histogram(name, fam["samples"])
    return families


def _check_histogram(name: str, samples: list) -> None:
    groups: dict = {}
    for sample_name, labels, value in samples:
        rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        groups.setdefault(rest, {"buckets": [], "sum": None, "count": None})
        g = groups[rest]
        if sample_name.endswith("_bucket"):
            g["buckets"].append((float(labels["le"].replace("Inf", "inf")), value))
        elif sample_name.endswith("_sum"):
            g["sum"] = value
        else:
            g["count"] = value
    for _rest, g in groups.items():
        bounds = [b for b, _ in g["buckets"]]
        counts = [c for _, c in g["buckets"]]
        assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds), f"{name}: buckets out of order"
        assert bounds and math.isinf(bounds[-1]), f"{name}: no +Inf bucket"
        assert counts == sorted(counts), f"{name}: buckets not cumulative"
        assert g["count"] == counts[-1], f"{name}: _count != +Inf bucket"
        assert g["sum"] is not None, f"{name}: no _sum"


def sample(families: dict, name: str, **labels) -> float:
    """The value of one sample (family or sample *name*, exact *labels*)."""
    for _fam_name, fam in families.items():
        for sample_name, sample_labels, value in fam["samples"]:
            if sample_name == name and sample_labels == labels:
                return value
    raise KeyError(f"no sample {name}{labels}")


# ---- tests -----------------------------------------------------------------------------------


def test_registry_renders_parseable_text_with_every_type():
    reg = Registry()
    requests = reg.counter("app_requests_total", "Requests.\nSecond line \\ backslash", labels=("path", "code"))
    requests.labels(path="/a", code="200").inc()
    requests.labels("/a", "200").inc(2)
    requests.labels(path='we"ird\\path\n', code="500").inc()
    depth = reg.gauge("app_queue_depth", "Depth.")
    depth.set(7)
    depth.dec(2)
    reg.gauge("app_answer", "From a function.", function=lambda: 42.5)
    latency = reg.histogram("app_latency_seconds", "Latency.", buckets=(0.1, 1.0, 10.0))
    for v in (0.05, 0.1, 0.5, 2.0, 20.0):
        latency.observe(v)
    reg.add_collector(lambda: [MetricFamily("app_up", "gauge", "Up.").add(1)])

    text = reg.render()
    fams = parse_exposition(text)
    assert fams["app_requests_total"]["type"] == "counter"
    assert fams["app_requests_total"]["help"] == "Requests.\nSecond line \\ backslash"
    assert sample(fams, "app_requests_total", path="/a", code="200") == 3
    assert sample(fams, "app_requests_total", path='we"ird\\path\n', code="500") == 1
    assert sample(fams, "app_queue_depth") == 5
    assert sample(fams, "app_answer") == 42.5
    # le="0.1" includes 0.1 itself (upper bounds are inclusive)
    assert sample(fams, "app_latency_seconds_bucket", le="0.1") == 2
    assert sample(fams, "app_latency_seconds_bucket", le="1") == 3
    assert sample(fams, "app_latency_seconds_bucket", le="10") == 4
    assert sample(fams, "app_latency_seconds_bucket", le="+Inf") == 5
    assert sample(fams, "app_latency_seconds_count") == 5
    assert sample(fams, "app_latency_seconds_sum") == pytest.approx(22.65)
    assert sample(fams, "app_up") == 1
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_values_are_written_as_the_format_wants():
    assert format_value(3) == "3"
    assert format_value(3.0) == "3"
    assert format_value(0.25) == "0.25"
    assert format_value(float("inf")) == "+Inf"
    assert format_value(float("-inf")) == "-Inf"
    assert format_value(float("nan")) == "NaN"
    assert format_value(True) == "1"
    assert float(format_value(1e300)) == 1e300


def test_bad_names_and_misuse_are_refused():
    reg = Registry()
    with pytest.raises(ValueError, match="metric name"):
        reg.counter("bad-name", "x")
    with pytest.raises(ValueError, match="label name"):
        reg.counter("ok_total", "x", labels=("__reserved",))
    with pytest.raises(ValueError, match="duplicate"):
        reg.counter("ok_total", "x", labels=("a", "a"))
    c = reg.counter("ok_total", "x", labels=("a",))
    with pytest.raises(ValueError, match="already registered"):
        reg.counter("ok_total", "again")
    with pytest.raises(ValueError, match="labels"):
        c.inc()  # labelled: needs .labels() first
    with pytest.raises(ValueError, match="needs"):
        c.labels("1", "2")
    with pytest.raises(ValueError, match="only goes up"):
        c.labels("1").inc(-1)
    with pytest.raises(ValueError, match="ascending"):
        Histogram("h", "x", buckets=(1, 1))
    with pytest.raises(ValueError, match="reserved"):
        Histogram("h", "x", labels=("le",))
    with pytest.raises(ValueError, match="twice"):
        render_families([MetricFamily("a", "gauge", "x"), MetricFamily("a", "gauge", "y")])


def test_empty_registry_renders_nothing():
    assert Registry().render() == ""


def test_counters_are_exact_under_threads():
    counter = Counter("c_total", "x")
    hist = Histogram("h_seconds", "x", buckets=(1.0,))

    def work():
        for _ in range(20_000):
            counter.inc()
            hist.observe(0.5)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter.value == 80_000
    assert hist.count == 80_000
    assert hist.sum == pytest.approx(40_000)


@pytest.mark.parametrize("bad", [
    "metric_without_type 1\n",
    "# TYPE a counter\na -1\n",
    "# TYPE a gauge\na 1\na 2\n",
    "# TYPE a gauge\na{x=\"1\" 1\n",
    "# TYPE a gauge\na one\n",
    "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
    "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
    "# TYPE a gauge\nb 1\n",
    "# TYPE a gauge\na 1",
])
def test_the_parser_is_strict(bad):
    with pytest.raises(AssertionError):
        parse_exposition(bad)
