"""``python -m rnnlab.cli`` runs the command line, as ``rnnlab`` and ``python -m rnnlab`` do."""

import sys

from rnnlab.cli import main

sys.exit(main())
