"""pushcore.admin.prometheus writes the Prometheus text format 0.0.4: checked by a strict parser.

``parse_exposition`` below is an independent reader of the format (it does
not use pushcore.admin.prometheus) that refuses anything the format does not allow;
the admin API tests use it too.
"""
from __future__ import annotations

import threading

import pytest

from prometheus_text import parse_exposition, sample  # noqa: E402
from pushcore.admin.prometheus import (
    CONTENT_TYPE,
    Counter,
    Histogram,
    MetricFamily,
    Registry,
    format_value,
    render_families,
)


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
