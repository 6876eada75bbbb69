"""``python -m rtmo_triton.build`` (``make build-engines``): see ``rtmo_triton.build.repository``."""
import sys

from .repository import main

sys.exit(main())
