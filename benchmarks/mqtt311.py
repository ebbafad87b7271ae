"""The MQTT 3.1.1 comparison codec (PUBLISH, PUBACK, PINGREQ, PINGRESP).

It lives in ``pushcore/mqtt311.py`` so that ``pushcore demo-codec`` and ``pushcore
bench`` can use it from an installed package; this module re-exports it for
the benchmarks.
"""
from pushcore.bench.mqtt311 import *  # noqa: F401,F403
from pushcore.bench.mqtt311 import __all__  # noqa: F401
