"""The device side: one phone's connection (``pushcore.Client``).

===============  =============================================================
module           job
===============  =============================================================
``client``       ``Client``: connect with fallback and probing, HELLO/resume,
                 acks, FETCH, subscribe, upstream, redirect and GOAWAY
``inbox``        dedupe by seq, in-order hand-over, expiry, cumulative acks
``heartbeat``    the adaptive heartbeat policy (probe up, back off, remember)
``serverlist``   server lists: literal, HTTP (sorted by load), built-in fallback
===============  =============================================================
"""
