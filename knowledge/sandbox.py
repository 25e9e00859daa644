"""Text extraction in a child process with a wall-clock and a memory bound.

A file is whatever someone uploaded: a decompression bomb, a PDF with a million pages,
text shaped to make a parser quadratic. ``extract_text_isolated`` runs
``knowledge.parsing.extract_text`` in ``python -m knowledge.sandbox``, a fresh interpreter
(no threads, locks or connections inherited from the worker) that:

- gets the file on stdin and the limits in its arguments (it needs no Django settings);
- caps its own address space (KNOWLEDGE_PARSE_MAX_MEMORY_MB) and CPU time before parsing;
- is killed when it is not done within KNOWLEDGE_PARSE_TIMEOUT_S of wall-clock time.

Every way it can fail is an ``InvalidUpload`` with a reason the admin and the job show
("took longer than 60 s to parse", "unpacks to 2.0 GiB", "needs more than 1024 MB"): the
job fails for good (retrying cannot make the file smaller) and the worker goes on.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from knowledge import errors
from knowledge.parsing import ParsedDocument, ParseLimits, extract_text

REPO = Path(__file__).resolve().parent.parent
# Variables the child keeps (it imports only the parsers and the standard library).
_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "PYTHONHASHSEED", "HOME", "TMPDIR")


def _error_classes() -> dict[str, type[errors.InvalidUpload]]:
    found: dict[str, type[errors.InvalidUpload]] = {}
    stack: list[type[errors.InvalidUpload]] = [errors.InvalidUpload]
    while stack:
        cls = stack.pop()
        found.setdefault(cls.code, cls)
        stack.extend(cls.__subclasses__())
    return found


def extract_text_isolated(
    data: bytes, *, filename: str, file_type: str, limits: ParseLimits | None = None
) -> ParsedDocument:
    """``extract_text`` in a bounded child process; raises the same InvalidUpload subclasses, plus
    ``ParseTimeout`` / ``ParseLimitExceeded`` when the child ran out of time or memory."""
    from django.conf import settings

    limits = limits or ParseLimits.from_settings()
    timeout = settings.KNOWLEDGE_PARSE_TIMEOUT_S
    memory_mb = settings.KNOWLEDGE_PARSE_MAX_MEMORY_MB
    request = {
        "filename": filename,
        "file_type": file_type,
        "limits": asdict(limits),
        "memory_mb": memory_mb,
        "cpu_s": int(timeout) + 2,
    }
    env = {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}
    env["PYTHONPATH"] = str(REPO)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "knowledge.sandbox", json.dumps(request)],
            input=data,
            capture_output=True,
            timeout=timeout,
            cwd=REPO,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:  # subprocess.run has killed the child
        raise errors.ParseTimeout(
            f"'{filename}' took longer than {timeout:g} s to parse (KNOWLEDGE_PARSE_TIMEOUT_S); the parser was stopped."
        ) from None
    try:
        result = json.loads(proc.stdout) if proc.returncode == 0 else None
    except ValueError:
        result = None
    if result is None:
        if proc.returncode in (-signal.SIGKILL, -signal.SIGXCPU) or b"MemoryError" in proc.stderr:
            raise errors.ParseLimitExceeded(
                f"'{filename}' needs more than {memory_mb} MB or the CPU time to parse "
                "(KNOWLEDGE_PARSE_MAX_MEMORY_MB, KNOWLEDGE_PARSE_TIMEOUT_S)."
            )
        raise errors.CorruptFile(
            f"'{filename}' could not be parsed (the parser stopped with status {proc.returncode})."
        )
    if not result.get("ok"):
        cls = _error_classes().get(result.get("code", ""), errors.CorruptFile)
        raise cls(str(result.get("message") or f"'{filename}' could not be parsed."))
    return ParsedDocument(result["text"], result.get("title", ""))


def _child(argv: list[str]) -> int:
    """The child's body: bound itself, parse stdin, print one JSON object."""
    request = json.loads(argv[1])
    memory = int(request["memory_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cpu = int(request["cpu_s"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    filename = request["filename"]
    data = sys.stdin.buffer.read()
    try:
        parsed = extract_text(
            data, filename=filename, file_type=request["file_type"], limits=ParseLimits(**request["limits"])
        )
        out = {"ok": True, "text": parsed.text, "title": parsed.title}
    except errors.InvalidUpload as exc:
        out = {"ok": False, "code": exc.code, "message": exc.message}
    except MemoryError:
        out = {
            "ok": False,
            "code": errors.ParseLimitExceeded.code,
            "message": f"'{filename}' needs more than {request['memory_mb']} MB to parse (KNOWLEDGE_PARSE_MAX_MEMORY_MB).",
        }
    except RecursionError:
        out = {"ok": False, "code": errors.CorruptFile.code, "message": f"'{filename}' is nested too deeply to parse."}
    except Exception as exc:  # a parser's own error on a damaged file: the file's fault, said plainly
        out = {
            "ok": False,
            "code": errors.CorruptFile.code,
            "message": f"'{filename}' cannot be read ({type(exc).__name__}).",
        }
    sys.stdout.write(json.dumps(out, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv))
