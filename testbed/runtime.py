"""A reactor in a background thread: start it, call into it from other threads, block on its Deferreds.

The pytest face runs the reactor this way for a whole session (plain tests in
the main thread reach the servers through ``call``), and the experiment
runner does the same in each worker process. Under ``twistd`` the reactor owns
the main thread and ``call`` simply runs the function.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

#: The thread running the reactor when it runs in a background thread; None
#: when the reactor owns the main thread (twistd) or has not been started here.
_REACTOR_THREAD: list[int | None] = [None]


def in_reactor_thread() -> bool:
    ident = _REACTOR_THREAD[0]
    return ident is None or ident == threading.get_ident()


def set_reactor_thread(ident: int | None) -> None:
    """Declare which thread runs the reactor (None: the caller's own, as under twistd)."""
    _REACTOR_THREAD[0] = ident


def start_reactor_thread(reactor, timeout: float = 30.0) -> threading.Thread:
    """Run ``reactor`` in a daemon thread (no signal handlers) and return once it is running."""
    running = threading.Event()
    reactor.callWhenRunning(running.set)
    thread = threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False},
                              name="testbed-reactor", daemon=True)
    thread.start()
    if not running.wait(timeout):
        raise RuntimeError(f"the Twisted reactor did not start within {timeout:g} seconds")
    set_reactor_thread(thread.ident)
    return thread


def stop_reactor_thread(reactor, thread: threading.Thread, timeout: float = 10.0) -> None:
    """Stop a reactor started by ``start_reactor_thread`` and wait for its thread."""
    reactor.callFromThread(reactor.stop)
    thread.join(timeout)
    set_reactor_thread(None)


def call(reactor, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn`` in the reactor thread and return its result; a Deferred result is waited for.

    Called in the reactor thread itself (or with the reactor not running), it
    runs ``fn`` directly and returns what it returns, Deferred or not.
    """
    if in_reactor_thread() or not reactor.running:
        return fn(*args, **kwargs)
    from twisted.internet.threads import blockingCallFromThread

    return blockingCallFromThread(reactor, fn, *args, **kwargs)
