"""What only the in-memory backends promise: bookkeeping that leaves nothing behind."""

from __future__ import annotations

from session_manager import InMemoryInfoSessionManager, InMemoryStreamSessionManager, StreamController


def test_slow_consumer_is_counted_once():
    streams = InMemoryStreamSessionManager()
    slow = StreamController(maxsize=3)
    streams.create("slow", slow)
    for i in range(10):
        streams.send(["slow"], f'{{"n":{i}}}')
        streams.send(None, f'{{"n":{i}}}')
    assert slow.overflowed
    assert streams.slow_consumers_dropped == 1
    assert len(streams) == 0


def test_closed_stream_is_not_counted_as_slow():
    streams = InMemoryStreamSessionManager()
    controller = StreamController()
    streams.create("a", controller)
    controller.close()
    streams.send(None, "{}")
    assert streams.slow_consumers_dropped == 0
    assert len(streams) == 0


def test_late_cleanup_of_old_stream_keeps_the_new_one():
    streams = InMemoryStreamSessionManager()
    old = StreamController()
    reader = iter(old)
    streams.create("a", old)
    old.enqueue("{}")
    next(reader)  # the old reader is running
    old.close()  # the reader is suspended mid-stream: its cleanup runs when it resumes
    new = StreamController()
    streams.create("a", new)  # a closed stream does not block a new one
    reader.close()  # the old stream's cleanup runs late
    assert streams.has("a") and streams._streams["a"] is new


def test_info_maps_are_empty_after_every_session_is_deleted():
    info = InMemoryInfoSessionManager()
    for i in range(50):
        info.create(f"s{i}", client_info={"i": i})
        info.set_log_level(f"s{i}", "debug")
        for j in range(5):
            info.add_subscription(f"s{i}", f"res://{j}")
    info.remove_subscription("s0", "res://0")
    for i in range(50):
        info.delete(f"s{i}")
    assert info._sessions == {} and info._subscribers == {}
    assert len(info) == 0


def test_body_closed_before_first_read_unregisters_the_stream():
    # A WSGI server closes a response body it never started (client gone at once).
    streams = InMemoryStreamSessionManager()
    controller = StreamController()
    streams.create("a", controller)
    iter(controller).close()
    assert controller.closed
    assert not streams.has("a") and len(streams) == 0
