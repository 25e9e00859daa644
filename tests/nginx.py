"""deploy/nginx/chat.conf, the file that ships, in a real nginx in front of a server on loopback."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.live import REPO, free_port
from tests.tools import need

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


class Nginx:
    def __init__(self, tmp: Path, *, upstream_port: int | None = None, upstream_ports: list[int] | None = None) -> None:
        """The shipped config in front of one app server (``upstream_port``) or several (``upstream_ports``)."""
        self.tmp = tmp
        self.upstream_ports = list(upstream_ports) if upstream_ports else [upstream_port] if upstream_port else []
        assert self.upstream_ports, "give upstream_port or upstream_ports"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        need(bool(NGINX), "nginx is not installed (deploy/local/install nginx)")
        conf = (REPO / "deploy" / "nginx" / "chat.conf").read_text()
        servers = ";\n    server ".join(f"127.0.0.1:{p} max_fails=3 fail_timeout=10s" for p in self.upstream_ports)
        conf = conf.replace("server api:8000 max_fails=3 fail_timeout=10s", f"server {servers}")
        assert all(f"127.0.0.1:{p}" in conf for p in self.upstream_ports), "the shipped upstream block changed"
        conf = conf.replace("listen 80 default_server", f"listen 127.0.0.1:{self.port} default_server")
        tmp = self.tmp
        (tmp / "chat.conf").write_text(conf)
        user = "user root;" if os.geteuid() == 0 else ""
        (tmp / "nginx.conf").write_text(
            f"""{user}
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{}}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/chat.conf;
}}
"""
        )
        self.proc = subprocess.Popen(
            [NGINX, "-p", f"{tmp}/", "-c", str(tmp / "nginx.conf"), "-g", "daemon off;"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert self.proc.poll() is None, (
                    self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
                )
                assert time.monotonic() < deadline, "nginx did not listen"
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
