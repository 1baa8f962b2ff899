"""`python -m wan_worker.client`."""

import sys

from wan_worker.client.cli import main

sys.exit(main())
