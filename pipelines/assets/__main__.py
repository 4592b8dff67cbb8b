"""`python -m pipelines.assets`: the set-up step's command line."""

import sys

from pipelines.assets import main

sys.exit(main())
