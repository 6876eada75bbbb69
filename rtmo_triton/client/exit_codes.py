"""Exit status of every command-line tool (rtmo-client, rtmo-eval, rtmo-video), in one place."""
from __future__ import annotations

OK = 0
SOME_FAILED = 1
"""Some images or frames failed; the rest were written."""
USAGE = 2
"""Bad arguments (argparse's own status)."""
SERVER = 3
"""Server unreachable, lost, or the model not ready."""
SOURCE = 4
"""rtmo-video: the source cannot be opened, stalled or was cut short."""
INTERRUPTED = 130
"""Ctrl-C or SIGTERM; what was done is saved."""

EPILOG = (f"Exit status: {OK} done, {SOME_FAILED} some inputs failed (the rest are written), {USAGE} bad "
          f"arguments, {SERVER} server unreachable or model not ready, {SOURCE} video source cannot be "
          f"opened, stalled or was cut short, {INTERRUPTED} interrupted.")
