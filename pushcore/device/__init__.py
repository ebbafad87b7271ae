"""The device side: one phone's connection (``pushcore.Client``).

===============  =============================================================
module           job
===============  =============================================================
``client``       ``Client``: connect with fallback and probing, HELLO/resume,
                 acks, FETCH, subscribe, upstream, redirect and GOAWAY
``inbox``        dedupe by seq, in-order hand-over, expiry, cumulative acks of
                 what the application handled, redelivery after a failure
``cause``        ``Cause``: why the client is not connected (kind, reason, errno)
``heartbeat``    the adaptive heartbeat policy (probe up, back off, remember)
``serverlist``   server lists: literal, HTTP (sorted by load), built-in fallback
===============  =============================================================
"""
