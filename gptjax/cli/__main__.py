"""`python -m gptjax.cli VERB ...`, the same as the `gptjax` command."""

import sys

from gptjax.cli import main

sys.exit(main())
