"""One place for progress lines: timestamped, to stderr, so stdout stays clean for results."""

from __future__ import annotations

import sys
import time


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)
