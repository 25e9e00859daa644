"""The uvicorn worker gunicorn runs in production (``deploy/gunicorn.conf.py``).

uvicorn-worker's own class leaves the event loop, HTTP parser and websocket
implementation on ``auto`` and keeps permessage-deflate on. The platform names them:

* uvloop + httptools: the fast paths (both are dependencies, so ``auto`` would pick
  them too; naming them makes a missing wheel an error instead of a silent slowdown);
* ``websockets-sansio``: the maintained websockets implementation (the legacy one is
  deprecated in uvicorn);
* a 1 ms GIL switch interval (below);
* no permessage-deflate: a chat streams tens of thousands of frames a second of a few
  dozen bytes each (one token), which compression does not shrink but makes about 35 %
  more expensive to send (17.7 vs 13.0 us per frame measured on uvicorn 0.54,
  docs/performance.md).
"""

from __future__ import annotations

import sys
from typing import Any

from uvicorn_worker import UvicornWorker as _UvicornWorker


class UvicornWorker(_UvicornWorker):
    CONFIG_KWARGS: dict[str, Any] = {
        "loop": "uvloop",
        "http": "httptools",
        "ws": "websockets-sansio",
        "ws_per_message_deflate": False,
    }

    # How long a thread may hold the GIL while another waits for it (Python's default: 5 ms).
    # The chat's database steps run in threads (chat.asyncdb); each time one holds the GIL
    # the event loop, which relays every token, waits. 1 ms lowered the 1,000-stream
    # benchmark's p99 from 65 / 93 ms to 46 / 73 ms (two runs each, docs/chat.md).
    GIL_SWITCH_INTERVAL_S = 0.001

    def run(self) -> None:
        sys.setswitchinterval(self.GIL_SWITCH_INTERVAL_S)
        super().run()
