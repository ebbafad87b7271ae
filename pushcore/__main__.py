"""``python -m pushcore``: the same as the ``pushcore`` command."""
from .cli import main

raise SystemExit(main())
