#!/usr/bin/env python
"""Print the codec comparison table: pushcore vs XMPP (slixmpp), MQTT 3.1.1, msgpack, JSON.

    python benchmarks/codec_table.py            # the full table (about 30 s)
    python benchmarks/codec_table.py --quick    # a rough one in a few seconds

The same as ``pushcore bench``: the code lives in ``pushcore.bench.table`` (and
the formats in ``pushcore.bench.comparison``) so the installed command can run it.
"""
import sys

from pushcore.bench.table import main

if __name__ == "__main__":
    sys.exit(main())
