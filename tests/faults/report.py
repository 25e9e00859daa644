"""What the fault suite saw, per fault: requests by outcome, the slowest answer, /readyz, recovery time.

``FaultResult.table()`` is the table docs/operations.md shows ("Dependency faults"); the suite
prints it and writes it to ``.local/fault-report.md``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tests.faults.load import DEADLINE_S, OK, OUTCOMES, Load, Sample

# A /readyz answer this long after a change may still be the old one (READYZ_CACHE_S=1 in the
# rig, probes bounded by READYZ_TIMEOUT=1, a breaker opening after a few failed requests).
READYZ_SETTLE_S = 3.0


@dataclass
class Fault:
    key: str
    title: str  # what was done, for the table
    effect: str  # what users see meanwhile (checked by the suite, written in the docs)
    readyz_during: str  # "ok", "unavailable", or "either" (too short to settle)
    hold_s: float  # how long the dependency stays away
    began: float = 0.0
    restored: float = 0.0
    ended: float = 0.0
    log_tracebacks: int = 0
    log_lines: int = 0  # warnings and errors
    problems: list[str] = field(default_factory=list)


def catalog() -> list[Fault]:
    """The faults, in order: what users get meanwhile and what /readyz says (docs/operations.md's table)."""
    return [
        Fault("redis", "Redis stopped, started again empty",
              "answers as usual: rate limits per process (RATELIMIT_FAIL_MODE=open), no response cache, "
              "sessions and history read from PostgreSQL; nobody logged out", "ok", 6.0),
        Fault("pg_restart", "PostgreSQL restarted (connections reset, refused meanwhile)",
              "a request needing the database in the gap waits for it or gets 503 with Retry-After; answers "
              "finishing in the gap are stored once it is back; /v1 without storage answers", "either", 2.5),
        Fault("pg_stop", "PostgreSQL stopped",
              "chat (websocket, REST, /v1 with store) refused with 503 and Retry-After; /v1 without storage "
              "answers on last-known-good configuration and API keys", "unavailable", 10.0),
        Fault("triton", "Triton stopped", "answers as usual; retrieval lexical only (no embeddings)", "ok", 6.0),
        Fault("es", "Elasticsearch stopped",
              "answers without sources (the not-found reply where the sources were needed)", "ok", 6.0),
        Fault("llm", "LLM server killed mid-stream",
              "streams in flight end with an error event (stream_interrupted; the partial answer stored); new "
              "questions refused fast (503 model_unavailable) until the circuit breaker's cool-down ends",
              "unavailable", 6.0),
        Fault("worker_db", "Worker's database connection cut",
              "nothing (the worker reconnects with backoff; an interrupted job is requeued)", "ok", 4.0),
    ]  # fmt: skip


def in_window(samples: list[Sample], fault: Fault) -> list[Sample]:
    """The requests the fault could touch: in flight when it began (a stream cut mid-way) up to its end."""
    return [s for s in samples if s.at + s.elapsed >= fault.began and s.at < fault.ended]


@dataclass
class FaultResult:
    fault: Fault
    outcomes: Counter
    slowest: tuple[float, str]  # seconds, client
    readyz_seen: list[int]
    readyz_back_s: float | None
    recovery_s: float

    @staticmethod
    def of(fault: Fault, load: Load) -> FaultResult:
        window = in_window(load.samples, fault)
        outcomes = Counter(s.outcome for s in window)
        slowest_sample = max(window, key=lambda s: s.elapsed, default=None)
        slowest = (slowest_sample.elapsed, slowest_sample.client) if slowest_sample else (0.0, "-")
        steady = [
            code for at, code, _ in load.readyz if fault.began + READYZ_SETTLE_S <= at < fault.restored and code != 0
        ]
        back = next(
            (at - fault.restored for at, code, _ in load.readyz if at >= fault.restored and code == 200),
            None,
        )
        # Recovery: from the restore until every client that failed during the fault has answered ok again.
        recovery = 0.0
        for client in {s.client for s in window if s.outcome != OK and s.at < fault.ended}:
            first_ok = next((s for s in load.samples if s.client == client and s.at >= fault.restored and
                             s.outcome == OK), None)  # fmt: skip
            if first_ok is None:
                recovery = float("inf")
            else:
                recovery = max(recovery, first_ok.at + first_ok.elapsed - fault.restored)
        return FaultResult(fault, outcomes, slowest, steady, back, recovery)

    def readyz_text(self) -> str:
        during = "200" if set(self.readyz_seen) == {200} else "503" if set(self.readyz_seen) == {503} else "200/503"
        if not self.readyz_seen:
            during = "-"
        back = "-" if self.readyz_back_s is None else f"{max(self.readyz_back_s, 0):.1f} s"
        return f"{during}, 200 again after {back}"

    def row(self) -> str:
        counts = ", ".join(f"{n} {o}" for o in OUTCOMES if (n := self.outcomes.get(o)))
        recovery = "no failures" if self.recovery_s == 0 else f"{self.recovery_s:.1f} s"
        if self.recovery_s == float("inf"):
            recovery = "not recovered"
        f = self.fault
        held = f"{f.restored - f.began:.1f} s"
        return (
            f"| {f.title} ({held}) | {f.effect} | {counts} | {self.slowest[0]:.2f} s ({self.slowest[1]}) "
            f"| {self.readyz_text()} "
            f"| {recovery} | {f.log_lines} / {f.log_tracebacks} |"
        )


HEADER = (
    "| fault (held) | what users get meanwhile | requests by outcome | slowest | /readyz during, after "
    "| recovered after | log lines: warnings / tracebacks |\n|---|---|---|---|---|---|---|"
)


def table(results: list[FaultResult]) -> str:
    return "\n".join([HEADER, *(r.row() for r in results)])


def legend() -> str:
    return (
        f"Outcomes: ok (answered), degraded (answered without sources: /v1 with retrieval), refused (a JSON 503/429 with Retry-After, fast), stream_error (an error "
        f"event inside a started stream), and never expected: http_500, html (an error page), hang (over "
        f"{DEADLINE_S:g} s), unexpected (anything else). Recovered after: from the dependency's return until "
        f"every client that failed has answered ok again."
    )
