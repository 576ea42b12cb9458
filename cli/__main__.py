"""`python -m cli`: the `chorus` command without its console script (a checkout not installed)."""

import sys

from cli.main import main

sys.exit(main())
