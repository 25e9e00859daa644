#!/usr/bin/env python3
"""Keep a command running: restart it when it exits, until told to stop (`make run`'s worker).

    supervise.py [--name worker] -- python manage.py knowledge_worker

What compose (``restart: unless-stopped``) and Kubernetes (a Deployment's pods restart) do
for the ingestion worker in production, for the local run: a crashed worker comes back
after a short backoff (1 s doubling to 30 s; reset after a minute of running). SIGTERM and
SIGINT are passed on to the command, which finishes its job and exits; then so does this.
Standard library only (it runs before anything else is installed).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time

FIRST_DELAY_S, MAX_DELAY_S, HEALTHY_AFTER_S = 1.0, 30.0, 60.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="command", help="Name used in the messages.")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="The command (after --).")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")

    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    delay = FIRST_DELAY_S
    while True:
        started = time.monotonic()
        child = subprocess.Popen(command)
        code = child.wait()
        if stopping:
            return 0
        ran = time.monotonic() - started
        delay = FIRST_DELAY_S if ran >= HEALTHY_AFTER_S else delay
        print(f"supervise: {args.name} exited with status {code} after {ran:.0f} s; restarting in {delay:.0f} s",
              file=sys.stderr, flush=True)  # fmt: skip
        deadline = time.monotonic() + delay
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.1)
        if stopping:
            return 0
        delay = min(delay * 2, MAX_DELAY_S)


if __name__ == "__main__":
    sys.exit(main())
