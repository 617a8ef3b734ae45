"""`python -m dermaseg.webui.cli`: the same as the `dermaseg` command."""

import sys

from dermaseg.webui.cli.main import main

sys.exit(main())
