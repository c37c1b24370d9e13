"""``python -m app.client``: see :mod:`app.client.cli`."""

import sys

from app.client.cli import main

sys.exit(main())
