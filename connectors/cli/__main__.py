"""``python -m connectors.cli`` runs ``kcdp``."""

import sys

from connectors.cli import main

sys.exit(main())
