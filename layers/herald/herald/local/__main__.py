"""``python -m herald.local``: run the local stack (see ``herald.local.stack``)."""

import sys

from herald.local.stack import main

sys.exit(main())
