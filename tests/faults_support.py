"""Parts of the fault-injection suite (tests/test_redis_faults.py): real Redis, real workers, real clients.

- :func:`deployed`: a redis-server, ``gunicorn -k gevent -w 2`` serving
  tests/gunicorn_app.py (the example on Redis managers with an event store),
  N sessions each read by a :class:`ResumingClient`, and a sender in the test
  process (a ``RedisStreamSessionManager`` on the same store and prefix).
- :class:`Burst`: numbered messages from that sender, one to each session per
  round and one broadcast, each with an idempotency key and retried with the
  same key after ``BackendUnavailableError`` (bounded). What ``send``
  finally returned is what counts as sent.
- :class:`ResumingClient`: one session's GET stream over a raw socket, read
  on a thread; whenever the stream ends it comes back with ``Last-Event-ID``
  (the id of the last event it received, priming events included, as an
  EventSource does), until an answer other than 200 or 503 ends it.
- :func:`tally`: per session what was sent, delivered (every connection,
  replays included), stored in the log, and how many resumes were answered 200.
- :class:`PersistentRedis`, :func:`paused`: a redis-server that keeps its data
  across a restart (AOF, fsync always), and a redis-server SIGSTOPped for a while.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from session_manager import BackendUnavailableError
from session_manager.redis import RedisEventStore, RedisStreamSessionManager

from .flask_support import LATEST, RawStream
from .gunicorn_app import WORKER_HEADER
from .gunicorn_support import Gunicorn, Pinned
from .redis_server import RedisServer
from .resume_support import msg, wait_until
from .sse_parser import SSEParser

logger = logging.getLogger(__name__)

#: The sender's Redis socket timeout: a stall longer than this fails its sends.
SENDER_SOCKET_TIMEOUT = 0.5
#: Attempts at one message, and the pause after a ``BackendUnavailableError``.
MAX_ATTEMPTS = 100
RETRY_PAUSE = 0.05
#: Seconds a whole burst may take, retries included.
BURST_TIMEOUT = 60.0
#: A read that sees nothing for this long ends the connection (the app sends a keep-alive every 0.5 s).
READ_TIMEOUT = 5.0
#: Pause before the next GET after a refused connection or a 503 (Redis down).
RECONNECT_PAUSE = 0.1
#: GETs one client may make: its stream, its resumes, attempts that failed.
MAX_CONNECTIONS = 400
#: Answers to a resume that tell the client events were lost: session gone (404) or stream log gone (410).
GONE = (404, 410)


class PersistentRedis(RedisServer):
    """A redis-server whose restart loses nothing: AOF on, fsync after every write, the same dir."""

    def command(self) -> list[str]:
        return [*super().command(), "--appendonly", "yes", "--appendfsync", "always"]  # later options win


@contextlib.contextmanager
def paused(server: RedisServer) -> Iterator[None]:
    """SIGSTOP the redis-server for the block (connections stay open, nothing answers), SIGCONT after."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


# -- the sender -------------------------------------------------------------------------


@dataclass
class Sent:
    """One message of a burst: its label, its target (a session's index, ``None``: broadcast), what became of it."""

    label: str
    target: int | None
    attempts: int = 0
    ok: bool = False


class Burst:
    """*rounds* rounds of one message to each session, then one broadcast, sent by one thread in that order.

    :attr:`midway` is set when round *fault_round* begins: the moment to inject a fault.
    """

    def __init__(self, sender: RedisStreamSessionManager, sids: Sequence[str], rounds: int, fault_round: int) -> None:
        self.sender = sender
        self.sids = list(sids)
        self.rounds = rounds
        self.fault_round = fault_round
        self.messages: list[Sent] = []
        self.midway = threading.Event()
        self.done = threading.Event()
        self._run_id = uuid.uuid4().hex[:8]  # idempotency keys of this burst only
        self.thread = threading.Thread(target=self._run, daemon=True, name="burst")

    def start(self) -> Burst:
        self.thread.start()
        return self

    def join(self) -> None:
        self.thread.join(BURST_TIMEOUT + 10)
        assert self.done.is_set(), "the burst did not end in time"

    def _run(self) -> None:
        deadline = time.monotonic() + BURST_TIMEOUT
        try:
            for round_ in range(self.rounds):
                if round_ == self.fault_round:
                    self.midway.set()
                for index, sid in enumerate(self.sids):
                    self._send(Sent(f"{index}.{round_}", index), [sid], deadline)
                self._send(Sent(f"all.{round_}", None), None, deadline)
        finally:
            self.midway.set()
            self.done.set()

    def _send(self, sent: Sent, targets: list[str] | None, deadline: float) -> None:
        """Send until ``send`` returns (retried with the same key: delivered and stored at most once)."""
        self.messages.append(sent)
        key, data = f"{self._run_id}:{sent.label}", msg(sent.label)
        while sent.attempts < MAX_ATTEMPTS and time.monotonic() < deadline:
            sent.attempts += 1
            try:
                self.sender.send(targets, data, idempotency_key=key)
            except BackendUnavailableError:
                time.sleep(RETRY_PAUSE)
                continue
            sent.ok = True
            return

    def sent_to(self, index: int) -> list[str]:
        """Labels sent (``send`` returned) to session *index*, targeted or broadcast, in send order."""
        return [m.label for m in self.messages if m.ok and m.target in (index, None)]

    def unsent(self) -> list[str]:
        """Labels whose every attempt failed: their outcome is unknown, so the counts cannot judge them."""
        return [m.label for m in self.messages if not m.ok]

    def retried(self) -> int:
        """Messages that needed more than one attempt: the fault hit the burst."""
        return sum(1 for m in self.messages if m.attempts > 1)


# -- the clients ------------------------------------------------------------------------


class _ResumeParser(SSEParser):
    """Also keeps the id an EventSource reconnects with: that of the last event dispatched, priming events included.

    (``last_event_id`` moves on the ``id:`` line, before its event is complete.)
    """

    def __init__(self) -> None:
        super().__init__()
        self.resume_id = ""

    def _dispatch(self) -> None:
        self.resume_id = self.last_event_id
        super()._dispatch()


@dataclass
class Connection:
    """One GET of a client: the ``Last-Event-ID`` it sent, the answer (``None``: none), the worker, what it delivered."""

    last_event_id: str | None
    status: int | None = None
    pid: int | None = None
    labels: list[str] = field(default_factory=list)


def label_of(data: str) -> str:
    """The label of a burst's message (the ``n`` of tests/resume_support.py's ``msg``); any other message as is."""
    try:
        return str(json.loads(data)["params"]["n"])
    except (ValueError, KeyError, TypeError):
        return f"unexpected {data!r}"


class ResumingClient:
    """A session's GET stream, read on a thread, resumed with ``Last-Event-ID`` whenever it ends.

    A 503 (Redis down) or a refused connection is tried again after a pause;
    any other answer than 200 ends the client (:attr:`final`).
    """

    def __init__(self, port: int, sid: str) -> None:
        self.port = port
        self.sid = sid
        self.connections: list[Connection] = []
        self.resume_id = ""
        #: The id of the first priming event: where the session's log starts.
        self.primer = ""
        self.final: int | None = None
        self.finished = threading.Event()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._stream: RawStream | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"client-{sid[:8]}")
        self.thread.start()

    def _run(self) -> None:
        try:
            for _ in range(MAX_CONNECTIONS):
                if self._closing.is_set() or not self._get():
                    return
        finally:
            self.finished.set()

    def _get(self) -> bool:
        """One GET (a resume once the client has an id); whether to make another."""
        headers = {"Accept": "text/event-stream", "Mcp-Session-Id": self.sid, "MCP-Protocol-Version": LATEST}
        connection = Connection(self.resume_id or None)
        if connection.last_event_id:
            headers["Last-Event-ID"] = connection.last_event_id
        with self._lock:
            self.connections.append(connection)
        try:
            stream = RawStream(self.port, "GET", "/mcp", headers, timeout=READ_TIMEOUT)
        except (OSError, ValueError, IndexError):  # refused, reset, or cut before the head was complete
            time.sleep(RECONNECT_PAUSE)
            return True
        with self._lock:
            self._stream = stream
        try:
            if self._closing.is_set():
                return False
            connection.status = stream.status
            connection.pid = int(stream.headers.get(WORKER_HEADER.lower(), 0)) or None
            if stream.status == 200:
                self._read(stream, connection)
                return True
            stream.read_all()
        finally:
            stream.close()
        if stream.status == 503:
            time.sleep(RECONNECT_PAUSE)
            return True
        self.final = stream.status
        return False

    def _read(self, stream: RawStream, connection: Connection) -> None:
        """Record the stream's messages until it ends (server closed it, worker died, or :meth:`close`)."""
        parser = _ResumeParser()
        for chunk in stream.chunks():
            events = parser.feed(chunk)
            with self._lock:
                connection.labels.extend(label_of(event.data) for event in events if event.data)  # not priming
                if parser.resume_id:
                    self.resume_id = parser.resume_id
                    self.primer = self.primer or parser.resume_id  # a stream's first event is its priming event

    def delivered(self) -> list[str]:
        """Every label received, in order, over every connection."""
        with self._lock:
            return [label for connection in self.connections for label in connection.labels]

    def answered(self) -> list[Connection]:
        with self._lock:
            return [c for c in self.connections if c.status is not None]

    def stop(self) -> None:
        """Make no more GETs (the current stream goes on until :meth:`close`)."""
        self._closing.set()

    def close(self) -> None:
        """End the current stream and stop resuming."""
        self.stop()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()
        self.thread.join(10)


# -- the deployment ---------------------------------------------------------------------


class Deployment:
    """What one scenario runs on: Redis, two workers, the sessions' clients, the sender."""

    def __init__(self, redis: RedisServer, server: Gunicorn, sender: RedisStreamSessionManager) -> None:
        self.redis = redis
        self.server = server
        self.sender = sender
        self.clients: list[ResumingClient] = []

    def open_sessions(self, count: int) -> None:
        """*count* sessions (initialized on one worker), each with its GET stream read by a client; once all are primed."""
        worker = Pinned(self.server.url)
        try:
            sids = [worker.initialize() for _ in range(count)]
        finally:
            worker.close()
        self.clients = [ResumingClient(self.server.port, sid) for sid in sids]
        primed = wait_until(lambda: all(c.primer or c.finished.is_set() for c in self.clients), timeout=30)
        assert primed and all(c.primer for c in self.clients), "not every stream opened and was primed"

    def burst(self, rounds: int) -> Burst:
        """Start a burst to every session; its fault moment is a third of the way in."""
        return Burst(self.sender, [c.sid for c in self.clients], rounds, fault_round=rounds // 3).start()

    def first_workers(self) -> Counter[int | None]:
        """How many streams each worker held first."""
        return Counter(c.answered()[0].pid for c in self.clients)

    def settle(self, burst: Burst, timeout: float = 20.0) -> None:
        """Wait (bounded) until each client has every message sent to it, or has ended."""
        sent = [set(burst.sent_to(i)) for i in range(len(self.clients))]
        wait_until(
            lambda: all(c.finished.is_set() or sent[i] <= set(c.delivered()) for i, c in enumerate(self.clients)),
            timeout=timeout,
            interval=0.05,
        )

    def close_clients(self) -> None:
        for client in self.clients:
            client.stop()  # all at once: none resumes while the others are being closed
        for client in self.clients:
            client.close()

    def server_log(self) -> str:
        """Stop the clients and the workers; gunicorn's whole log."""
        self.close_clients()
        self.server.close()
        return self.server.full_stderr()


@contextlib.contextmanager
def deployed(redis: RedisServer, sessions: int) -> Iterator[Deployment]:
    """Two gunicorn gevent workers on *redis* and *sessions* streaming sessions; everything stopped afterwards."""
    with contextlib.ExitStack() as stack:
        server = Gunicorn(redis.url, workers=2)
        stack.callback(server.close)
        sender = RedisStreamSessionManager(
            redis.url, socket_timeout=SENDER_SOCKET_TIMEOUT, event_store=RedisEventStore(redis.url)
        )
        stack.callback(sender.close)
        deployment = Deployment(redis, server, sender)
        stack.callback(deployment.close_clients)
        deployment.open_sessions(sessions)
        yield deployment


# -- the counts ---------------------------------------------------------------------------


@dataclass
class Tally:
    """One session: labels sent to it, delivered (in order), stored in its log (``None``: not read), resumes, end."""

    sid: str
    sent: list[str]
    delivered: list[str]
    stored: list[str] | None
    resumed: int
    final: int | None

    def duplicates(self) -> list[str]:
        return sorted(label for label, count in Counter(self.delivered).items() if count > 1)

    def lost(self) -> list[str]:
        got = set(self.delivered)
        return [label for label in self.sent if label not in got]

    def describe(self) -> str:
        extra = sorted(set(self.delivered) - set(self.sent))
        text = (
            f"{self.sid[:10]}: sent {len(self.sent)}, delivered {len(self.delivered)}, lost {self.lost()[:6]}, "
            f"doubled {self.duplicates()[:6]}, never sent {extra[:6]}, resumed {self.resumed}x, ended {self.final}"
        )
        if self.stored is not None:
            text += f", stored {len(self.stored)} ({len(self.stored) - len(set(self.stored))} twice)"
        return text


def tally(deployment: Deployment, burst: Burst, *, stored: bool) -> list[Tally]:
    """Each session's counts; with *stored*, its log replayed from its first priming event (one call per session)."""
    tallies = []
    store = deployment.sender.event_store
    for index, client in enumerate(deployment.clients):
        log = None
        if stored:
            assert isinstance(store, RedisEventStore)
            log = [label_of(message) for _, message in store.replay(client.sid, client.primer).events]
        resumed = sum(1 for c in client.answered() if c.last_event_id and c.status == 200)
        tallies.append(Tally(client.sid, burst.sent_to(index), client.delivered(), log, resumed, client.final))
    summary(tallies, burst)  # logged: what the scenario did, pass or fail
    return tallies


def summary(tallies: Sequence[Tally], burst: Burst) -> str:
    """Totals over every session, for assertion messages and the log."""
    text = (
        f"{len(tallies)} sessions, {len(burst.messages)} sends ({burst.retried()} retried, at most "
        f"{max(m.attempts for m in burst.messages)} attempts, {len(burst.unsent())} unsent): "
        f"sent {sum(len(t.sent) for t in tallies)}, delivered {sum(len(t.delivered) for t in tallies)}, "
        f"lost {sum(len(t.lost()) for t in tallies)}, doubled {sum(len(t.duplicates()) for t in tallies)}, "
        f"resumes {sum(t.resumed for t in tallies)}, ends {dict(Counter(t.final for t in tallies))}"
    )
    logger.info("%s", text)
    return text


def report(failing: Sequence[Tally], tallies: Sequence[Tally], burst: Burst) -> str:
    """An assertion message: the totals and the first few failing sessions."""
    lines = [f"{len(failing)} of {len(tallies)} sessions fail; {summary(tallies, burst)}"]
    lines += [t.describe() for t in failing[:8]]
    return "\n".join(lines)


def not_exactly_once(tallies: Sequence[Tally]) -> list[Tally]:
    """Sessions that did not get every message sent to them exactly once, in order (and stored once, when read)."""
    return [
        t
        for t in tallies
        if t.delivered != t.sent or t.final is not None or (t.stored is not None and t.stored != t.sent)
    ]


def silent_losses(tallies: Sequence[Tally]) -> list[Tally]:
    """Sessions where a loss could go unnoticed.

    The promise after Redis lost its data: never a duplicate, and a gap is
    never followed by later messages (no replay or live stream across it):
    what a client got is a prefix of what was sent to it, and if it is not
    all of it, the client's last resume was answered 404 or 410.
    """
    return [
        t
        for t in tallies
        if t.duplicates()
        or t.delivered != t.sent[: len(t.delivered)]
        or (len(t.delivered) < len(t.sent) and t.final not in GONE)
    ]
