"""``python -m gateway.cli``: the same as the ``pamgate`` command."""

import sys

from gateway.cli import main

sys.exit(main())
