"""``python -m rnnlab`` runs the command line (and works under ``torchrun -m rnnlab``)."""

import sys

from rnnlab.cli import main

sys.exit(main())
