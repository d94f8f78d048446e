import sys

from veilcam.cli import main

sys.exit(main())
