import sys

from magicvideo.cli import main

sys.exit(main())
