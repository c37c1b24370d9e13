"""``python -m app.probe``: see :mod:`app.probe.cli`."""

import sys

from app.probe.cli import main

sys.exit(main())
