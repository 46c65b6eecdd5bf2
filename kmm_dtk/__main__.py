import sys

from kmm_dtk.cli import main

sys.exit(main())
