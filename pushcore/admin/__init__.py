"""The operator's side: admin HTTP API, its client, Prometheus metrics.

====================  ========================================================
module                job
====================  ========================================================
``api``               ``AdminAPI``: push, batch, presence, /metrics, /healthz
``client``            ``AdminClient``: the API from Python (``pushcore push``)
``prometheus``        metric families, histograms, the text format
``gateway_metrics``   the collector over one server's loop, counters, store
``ack_latency``       push→ack latency, observed on the store
====================  ========================================================
"""
