"""Loaded by a worker started with ``PYTHONPATH=...:bench/cpu_trace`` and
``EDITSTREAM_CPU_TRACE=<file>``: attributes the main thread's CPU time (``time.thread_time``)
to what the event loop ran, and writes the running totals to ``<file>`` as one JSON line per
second (the reader takes the difference between two lines).

- every callback the loop runs is charged to its owner: a task step to the task's coroutine
  and, when it runs for a record of the stage runner or a Faust event, that record's source
  topic (its stage); any other
  callback to its function, a socket's ``_read_ready`` to the protocol it feeds (aiokafka's
  connection, aiohttp's response handler): model responses apart from Kafka's;
- inside those, a few synchronous calls are charged on their own as well (nested: their time
  is also in their owner's): socket writes per protocol with their count and bytes, the
  record encoding of `agents.runtime.dumps`; every stage's `Runtime.send_bytes` is counted
  with the bytes of each topic's records (not timed: it may await the producer).

Measurement costs ~1 µs per callback; compare traced runs with traced runs."""

from __future__ import annotations

import os

_PATH = os.environ.get("EDITSTREAM_CPU_TRACE")
if _PATH:
    import asyncio
    import asyncio.events
    import asyncio.selector_events
    import atexit
    import sys
    import threading
    import time
    from collections import defaultdict
    from typing import Any

    import orjson

    _cpu: dict[str, float] = defaultdict(float)
    _calls: dict[str, int] = defaultdict(int)
    _bytes: dict[str, int] = defaultdict(int)
    _main = threading.main_thread()
    _tt = time.thread_time

    def _proto_name(transport: Any) -> str:
        proto = getattr(transport, "_protocol", None)
        mod = type(proto).__module__.split(".")[0]
        return f"{mod}.{type(proto).__name__}"

    _event_var: list[Any] = []  # faust's current-event context variable, once imported
    _record_var: list[Any] = []  # the stage runner's current record (agents.runtime)

    def _stage(handle: asyncio.events.Handle) -> str:
        """The source topic of the record the callback runs for (its context's), if any: the
        stage runner's record (`agents.runtime.CURRENT_RECORD`) or Faust's event; tasks a
        handler starts copy its context, so they are charged to its stage too."""
        if not _record_var and (mod := sys.modules.get("agents.runtime")) is not None:
            _record_var.append(mod.CURRENT_RECORD)
        if _record_var and (rec := handle._context.get(_record_var[0])) is not None:  # type: ignore[attr-defined]
            return f"[{_short(rec.topic)}] "
        if not _event_var:
            mod = sys.modules.get("faust.streams")
            if mod is None:
                return ""
            _event_var.append(mod._current_event)
        ref = handle._context.get(_event_var[0])  # type: ignore[attr-defined]
        event = ref() if ref is not None else None
        if event is None:
            return ""
        return f"[{_short(event.message.topic)}] "

    def _short(topic: str) -> str:
        """A topic's name without the namespace prefix (`EDITSTREAM_TOPIC_PREFIX`)."""
        return topic.removeprefix(os.environ.get("EDITSTREAM_TOPIC_PREFIX", ""))

    def _owner(handle: asyncio.events.Handle) -> str:
        cb = handle._callback  # type: ignore[attr-defined]
        owner = getattr(cb, "__self__", None)
        if owner is not None and hasattr(owner, "get_coro"):
            coro = owner.get_coro()
            name = getattr(coro, "__qualname__", "?")
            if name == "Service._execute_task":  # mode's wrapper: name the service's task
                inner = getattr(coro, "cr_await", None)
                name += f"({getattr(inner, '__qualname__', type(inner).__qualname__)})"
            return f"task {_stage(handle)}{name}"
        if owner is not None and isinstance(owner, asyncio.selector_events._SelectorTransport):
            return f"io {getattr(cb, '__name__', '?')} {_proto_name(owner)}"
        # never repr() a callback: with it, aiohttp's responses lost their headers
        name = getattr(cb, "__qualname__", None) or type(cb).__qualname__
        return f"cb {_stage(handle)}{name}"

    _run = asyncio.events.Handle._run

    # callbacks that held the loop for over LONG_S of CPU (issue 15, goal 3: none over
    # 20 ms): wall time, owner, CPU ms; a few per run at most, bounded anyway
    _LONG_S = 0.010
    _long: list[tuple[float, str, float]] = []

    def _timed_run(self: asyncio.events.Handle) -> None:
        t0 = _tt()
        try:
            _run(self)
        finally:
            key = _owner(self)
            dt = _tt() - t0
            _cpu[key] += dt
            _calls[key] += 1
            if dt > _LONG_S and len(_long) < 10_000:
                _long.append((time.time(), key, round(dt * 1000, 1)))

    asyncio.events.Handle._run = _timed_run  # type: ignore[method-assign]

    def _wrap_sync(key_of: Any, fn: Any, size_of: Any = None) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is not _main:
                return fn(*args, **kwargs)
            t0 = _tt()
            try:
                return fn(*args, **kwargs)
            finally:
                key = "sync " + key_of(args)
                _cpu[key] += _tt() - t0
                _calls[key] += 1
                if size_of is not None:
                    _bytes[key] += size_of(args)
        return wrapped

    _ST = asyncio.selector_events._SelectorSocketTransport
    _ST.write = _wrap_sync(lambda a: f"socket.write {_proto_name(a[0])}", _ST.write,
                           lambda a: len(a[1]))
    _ST.writelines = _wrap_sync(lambda a: f"socket.writelines {_proto_name(a[0])}",
                                _ST.writelines, lambda a: sum(len(b) for b in a[1]))

    def _late_patches() -> None:
        """Modules of the project, patched once imported (by the worker)."""
        import agents.runtime as rt

        rt.dumps = _wrap_sync(lambda a: "agents.runtime.dumps", rt.dumps)  # type: ignore
        orig_send = rt.Runtime.send_bytes

        async def send_bytes(self: Any, topic: str, key: bytes, value: bytes, *args: Any,
                             **kwargs: Any) -> Any:
            # every stage's sends, the stage runner's and the retry agent's
            name = f"Topic.send {topic}"
            _calls[name] += 1
            _bytes[name] += len(value)
            return await orig_send(self, topic, key, value, *args, **kwargs)

        rt.Runtime.send_bytes = send_bytes  # type: ignore[method-assign]

    def _dump() -> None:
        snap = {"t": time.time(), "cpu": dict(_cpu), "calls": dict(_calls),
                "bytes": dict(_bytes), "long": list(_long), "main_cpu": time.clock_gettime(
                    time.pthread_getcpuclockid(_main.ident)) if _main.ident else 0.0,
                "process_cpu": time.process_time()}
        with open(_PATH, "ab") as f:
            f.write(orjson.dumps(snap) + b"\n")

    def _loop() -> None:
        patched = False
        while True:
            time.sleep(1.0)
            if not patched and "agents.app" in sys.modules:  # the worker's modules are in
                _late_patches()
                patched = True
            _dump()

    threading.Thread(target=_loop, name="cpu-trace", daemon=True).start()
    atexit.register(_dump)

_PROFILE = os.environ.get("EDITSTREAM_CPU_PROFILE")
if _PROFILE:
    # cProfile of the main thread on its CPU clock, written at exit (function-level CPU:
    # coroutines are charged per resume, so awaits do not count)
    import atexit as _atexit
    import cProfile
    import time as _time

    _prof = cProfile.Profile(timer=_time.thread_time)
    _prof.enable()
    _atexit.register(lambda: (_prof.disable(), _prof.dump_stats(_PROFILE)))
