"""The uvicorn worker gunicorn runs in production (``deploy/gunicorn.conf.py``).

uvicorn-worker's own class leaves the event loop, HTTP parser and websocket
implementation on ``auto`` and keeps permessage-deflate on. The platform names them:

* uvloop + httptools: the fast paths (both are dependencies, so ``auto`` would pick
  them too; naming them makes a missing wheel an error instead of a silent slowdown);
* ``websockets-sansio``: the maintained websockets implementation (the legacy one is
  deprecated in uvicorn);
* a 1 ms GIL switch interval, and garbage collection tuned for many long-lived streams
  (below);
* websocket messages of at most CHAT_WS_MAX_FRAME_BYTES (64 KiB; uvicorn's default is
  16 MiB): a chat frame is a question of at most GATEWAY_MAX_MESSAGE_CHARS, and a larger
  one closes the socket (1009) before it is buffered whole (docs/security.md);
* no permessage-deflate: a chat streams tens of thousands of frames a second of a few
  dozen bytes each (one token), which compression does not shrink but makes about 35 %
  more expensive to send (17.7 vs 13.0 us per frame measured on uvicorn 0.54,
  docs/performance.md).
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any

from uvicorn_worker import UvicornWorker as _UvicornWorker


class UvicornWorker(_UvicornWorker):
    CONFIG_KWARGS: dict[str, Any] = {
        "loop": "uvloop",
        "http": "httptools",
        "ws": "websockets-sansio",
        "ws_per_message_deflate": False,
        # Read from the environment: gunicorn builds the worker before Django's settings load.
        "ws_max_size": int(os.environ.get("CHAT_WS_MAX_FRAME_BYTES", "").strip() or 64 * 1024),
    }

    # How long a thread may hold the GIL while another waits for it (Python's default: 5 ms).
    # The chat's database steps run in threads (chat.asyncdb); each time one holds the GIL
    # the event loop, which relays every token, waits. 1 ms lowered the 1,000-stream
    # benchmark's p99 from 65 / 93 ms to 46 / 73 ms (two runs each, docs/chat.md).
    GIL_SWITCH_INTERVAL_S = 0.001

    # The cycle collector's thresholds (Python's defaults: 700, 10, 10). Each collection
    # pauses the event loop for as long as it takes to walk its generations, and with
    # hundreds of streams per process the youngest generation always holds the objects of
    # every stream's pending read (~26 per stream: ~13,000 at 500 streams), so young
    # collections (~8 a second) took 10-30 ms every ~3 s; gen1 ones (every tenth) up to
    # 45 ms; and the full ones (gen2, all ~300,000 live objects), 150-300 ms every
    # 30-60 s. A young collection every 5,000 net new objects instead of 700 runs about
    # half as often, and a full one waits for 100 gen1 collections instead of 10 (and,
    # as always, for the old generation to grow by a quarter): under the 1,000-stream
    # benchmark one every 4-5 minutes at most instead of every 30-60 s. The full
    # collections found only 20-200 garbage objects each, so memory does not grow for
    # it. 1,000 streams: added p99 46-93 -> 19-38 ms (docs/chat.md).
    GC_THRESHOLDS = (5000, 10, 100)

    def run(self) -> None:
        sys.setswitchinterval(self.GIL_SWITCH_INTERVAL_S)
        self.freeze_startup_objects()
        gc.set_threshold(*self.GC_THRESHOLDS)
        super().run()

    @staticmethod
    def freeze_startup_objects() -> None:
        """Leave the objects of the loaded application out of every later collection.

        A full collection walks every live object while it holds the GIL, so its pause
        grows with the heap (about 1 us an object on these machines), and Django, DRF,
        Channels and the platform's modules are some 140,000 objects that live as long
        as the process. The application is loaded when ``run`` starts (gunicorn's
        ``init_process`` loaded it); what is garbage now is collected first, the rest is
        moved to the permanent generation (``gc.freeze``, made for this) and is never
        walked again. Those objects are still freed by reference counting; only cycles
        among them would stay, and start-up objects are not thrown away.
        """
        gc.collect()
        gc.freeze()
