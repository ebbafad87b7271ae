"""A strict parser of the Prometheus text format, for tests that read /metrics
(tests/admin/test_prometheus.py holds the parser itself to the format)."""
from __future__ import annotations

import math
import re

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
