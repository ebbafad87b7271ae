"""User-facing codec benchmarks: pushcore's frames against XMPP-style stanzas,
MQTT 3.1.1, msgpack and JSON on the same notification.

Imported only by ``pushcore bench`` and ``pushcore demo-codec`` (and by
``benchmarks/``); nothing in the gateway, device or simulator imports it.

==================  ==========================================================
module              job
==================  ==========================================================
``options``         the command's options (light: no format is imported)
``comparison``      the cases: one notification encoded and decoded per format
``table``           timing, the table, the targets (PASS / MISS)
``mqtt311``         a minimal MQTT 3.1.1 codec (PUBLISH, PUBACK, PINGREQ/RESP)
``xmpp``            XMPP-style stanzas with slixmpp
``codec_demo``      one notification through the codec, byte by byte
==================  ==========================================================
"""
