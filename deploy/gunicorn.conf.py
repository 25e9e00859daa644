"""Gunicorn settings for the production API server (ASGI through uvicorn workers).

    gunicorn config.asgi:application -c deploy/gunicorn.conf.py

Every value can be overridden by an environment variable (names below) or a
command-line flag. Metrics: with several worker processes prometheus_client
needs PROMETHEUS_MULTIPROC_DIR (a writable, per-container, empty directory);
this file cleans it at start, marks dead workers and samples each worker's
CPU and memory (the process_* collector does not exist in multiprocess mode).
"""

from __future__ import annotations

import glob
import math
import os
import socket
import threading
import time
from typing import Any


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def _usable_cpus() -> int:
    """CPUs this container may use: the affinity mask, capped by a cgroup v2/v1 CPU quota.

    os.cpu_count() reports the node's cores; in a pod limited to 2 CPUs on a
    64-core node that would start 64 workers fighting for 2 cores.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = None
    try:
        with open("/sys/fs/cgroup/cpu.max") as fh:  # cgroup v2: "<quota> <period>" or "max <period>"
            q, period = fh.read().split()
            if q != "max":
                quota = int(q) / int(period)
    except (OSError, ValueError):
        try:
            with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as fq, open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as fp:
                q1, p1 = int(fq.read()), int(fp.read())
                if q1 > 0:
                    quota = q1 / p1
        except (OSError, ValueError):
            pass
    if quota:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


# --- server socket and workers ---------------------------------------------------
bind = os.environ.get("GUNICORN_BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
worker_class = "config.workers.UvicornWorker"
# One async worker saturates one core (the event loop is single-threaded), so one
# per core; the sync-worker rule 2*cores+1 would only add memory.
workers = _env_int("WEB_CONCURRENCY", _usable_cpus())
# Worker heartbeat, not a request limit: uvicorn workers keep answering the
# arbiter while a long SSE stream or websocket is open.
timeout = _env_int("GUNICORN_TIMEOUT", 60)
# On SIGTERM (rolling update) workers stop accepting and let open answers finish.
# Keep it below the pod's terminationGracePeriodSeconds.
graceful_timeout = _env_int("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = _env_int("GUNICORN_KEEPALIVE", 5)
# Recycling bounds slow leaks but drops a worker's open websockets; off by default.
max_requests = _env_int("GUNICORN_MAX_REQUESTS", 0)
max_requests_jitter = _env_int("GUNICORN_MAX_REQUESTS_JITTER", 0)
# Trust X-Forwarded-For/-Proto only from the reverse proxy (nginx / the ingress): the same
# CIDRs the app believes (TRUSTED_PROXIES, config/proxies.py), unless set apart. Never "*":
# then any client that reaches the port picks its own address (and rate-limit budget).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS") or os.environ.get("TRUSTED_PROXIES") or "127.0.0.1"

# --- logging: the application logs requests itself (monitoring.logging) ----------
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()

# A read-only root filesystem is fine: heartbeat files go to memory-backed /dev/shm.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# gunicorn >= 25 opens a control socket under $HOME; nothing here uses it, and a
# non-root user with a read-only home could not create it.
control_socket_disable = True


def _add_own_addresses_to_allowed_hosts() -> None:
    """Probes and Prometheus reach a container by its IP (Host: 10.1.2.3:8000).

    Django would answer 400 DisallowedHost. The container's own addresses (and
    loopback, for the image's HEALTHCHECK) name nothing an attacker can point a
    domain at, so allowing them costs nothing. Runs in the master before
    workers fork, so every worker's settings see it.
    """
    if os.environ.get("ALLOWED_HOSTS_ADD_OWN_IP", "1").strip().lower() in {"0", "false", "no", "off"}:
        return
    own: set[str] = {"127.0.0.1", "::1", "localhost"}
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            own.add(str(info[4][0]))
    except OSError:
        pass
    if os.environ.get("POD_IP"):
        own.add(os.environ["POD_IP"])
    current = os.environ.get("ALLOWED_HOSTS")
    hosts = [h.strip() for h in current.split(",") if h.strip()] if current is not None else []
    if current is None:
        # Keep the settings default (local names) when the variable is unset.
        hosts = ["localhost", "127.0.0.1", "[::1]"]
    for addr in sorted(own):
        entry = f"[{addr}]" if ":" in addr else addr  # Django wants IPv6 literals bracketed
        if entry not in hosts:
            hosts.append(entry)
    os.environ["ALLOWED_HOSTS"] = ",".join(hosts)


_add_own_addresses_to_allowed_hosts()


# --- hooks ---------------------------------------------------------------------
def on_starting(server: Any) -> None:
    """Start from an empty metrics directory: files of a previous run would be summed in."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        # server.cfg: the command line's --workers overrides this file's default.
        if server.cfg.workers > 1:
            server.log.warning(
                "PROMETHEUS_MULTIPROC_DIR is unset with %s workers: /metrics shows one worker", server.cfg.workers
            )
        return
    os.makedirs(path, exist_ok=True)
    for stale in glob.glob(os.path.join(path, "*.db")):
        os.remove(stale)


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges (open websockets, queue depth) from the aggregate."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


_SAMPLE_INTERVAL = 15.0


def _sample_process_forever() -> None:
    from monitoring.metrics import WORKER_CPU_SECONDS, WORKER_RESIDENT_MEMORY

    page = os.sysconf("SC_PAGE_SIZE")
    last_cpu = 0.0
    while True:
        times = os.times()
        cpu = times.user + times.system
        WORKER_CPU_SECONDS.inc(max(0.0, cpu - last_cpu))
        last_cpu = cpu
        try:
            with open("/proc/self/statm") as fh:
                WORKER_RESIDENT_MEMORY.set(int(fh.read().split()[1]) * page)
        except (OSError, ValueError, IndexError):
            pass
        time.sleep(_SAMPLE_INTERVAL)


def post_worker_init(worker: Any) -> None:
    """Each worker samples its own CPU and memory into the multiprocess metrics files."""
    threading.Thread(target=_sample_process_forever, name="process-metrics", daemon=True).start()
