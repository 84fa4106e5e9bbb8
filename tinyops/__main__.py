"""``python -m tinyops``: the ``tinyops`` command."""

import sys

from .cli import main

sys.exit(main())
