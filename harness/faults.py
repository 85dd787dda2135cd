"""Named points where the fault tests (tests/faults/) kill the harness with SIGKILL.

``HARNESS_FAULT=<point>`` in the environment makes the process kill itself, for real and
without cleanup, when it reaches that point; unset (always, outside those tests) a point
costs one dictionary lookup.  The tests then run the harness again and check that it
recovers with no manual step.  Points: ``atomic:before-replace`` (a temp file complete,
not yet renamed), ``gguf:written`` (a GGUF written and checked in its temp directory, not
yet moved into place), ``gguf:shard-moved`` (one shard of a split set moved into place, the
others not yet), ``replace_dir:exchanged`` (a directory swapped in, the old copy not
yet retired), ``build:collected`` (a build assembled beside the published one, smoke
checks not yet run), ``journal:prepared`` / ``journal:tentative`` / ``journal:committed`` /
``journal:wrote`` (a multi-file write of harness/journal.py: old contents journaled, a file
written for a check, new contents journaled, one file of the set switched).
"""

from __future__ import annotations

import os
import signal


def point(name: str) -> None:
    if os.environ.get("HARNESS_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
