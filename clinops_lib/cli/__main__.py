"""``python -m clinops_lib.cli``: the ``clinops`` command without its console script."""

import sys

from . import main

sys.exit(main())
