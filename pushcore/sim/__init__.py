"""Many simulated devices in one process (``pushcore.Simulator``).

===============  =============================================================
module           job
===============  =============================================================
``simulator``    ``Simulator``: thousands of devices on one loop, churn, NAT
``profiles``     ``Profile``: heartbeat, churn, NAT timeout, link resets
``traffic``      the pusher that feeds a gateway (in process or via the API)
``report``       missing / duplicate / out-of-order, latency, progress bar
===============  =============================================================
"""
