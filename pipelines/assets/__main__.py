"""`python -m pipelines.assets`: the set-up step's command line."""

import sys

from pipelines.assets.cli import main

sys.exit(main())
