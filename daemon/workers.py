"""Run the snapshot's listings in child processes, so their CPU is spread over every core.

Why: a listing is latency-bound only while one core keeps up with it. Reading 100,000 numbers
costs about 7 s of CPU in SDK parsing, normalising and row building, and in one process the GIL
puts all of it, for Vapi and every carrier, on one core: a million numbers took six times the
latency floor. Each listing (a generator of messages, see ``Job``) therefore runs in a child
process forked for the run, and the parent only writes the rows it receives to the database,
which stays single-writer.

Why fork, and why only where it is safe: a forked child starts with the adapters the parent built
(clients, credentials, caches) without pickling them, and in milliseconds, where spawning would
import three SDKs again (about a second). It is used on Linux only; elsewhere, and when
configured off, the same jobs run in threads of this process (``run_in_threads``). The child
touches nothing of the parent's but its job: no database connection (it leaves with
``os._exit``, closing nothing), and the parent drops the HTTP connections a child may have used
(``VapiApi.reset_connections``) before it talks to Vapi again.

Callbacks the adapters call during a listing (request metrics) would update the child's copy of
the parent's state and be lost: wrap them in ``relayed`` and their calls are carried back with
the next message and replayed in the parent.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import itertools
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog

__all__ = ["Job", "Relay", "fork_available", "freeze_heap_for_good", "relayed", "run_in_processes", "run_in_threads"]

log = structlog.get_logger(__name__)

# A message from a job: ("rows", [...]), ("progress", (done, total)); the runner adds
# ("done", None) or ("error", text) at the end, and a process runner ("cpu", seconds) before "done".
Message = tuple[str, Any]
Event = tuple[str, str, Any]  # (tag, kind, payload)


@dataclass
class Job:
    """One listing: ``run`` yields messages; ``error_text`` turns its failure into the text reported."""

    tag: str
    run: Callable[[], Iterator[Message]]
    error_text: Callable[[BaseException], str]
    # Its "rows" are lists of tuples of text, None, bools, numbers and timezone-aware datetimes,
    # which MessagePack carries with their types (not a naive datetime, a set, a UUID ...): from a
    # listing process they then cross the pipe as MessagePack (``_packed``).
    plain_rows: bool = False
    # How much lower a CPU priority (Unix nice) its listing process takes: see ``take_snapshot``.
    nice: int = 0


# -- relayed callbacks ------------------------------------------------------------------------------
_in_child = False
_outbox: list[tuple[int, tuple[Any, ...]]] = []
_outbox_lock = threading.Lock()
_relays: weakref.WeakValueDictionary[int, Relay] = weakref.WeakValueDictionary()
_ids = itertools.count()


class Relay:
    """A callback that may be called in a listing process; see the module docstring."""

    def __init__(self, fn: Callable[..., None]) -> None:
        self._fn = fn
        self.id = next(_ids)
        _relays[self.id] = self

    def __call__(self, *args: Any) -> None:
        if _in_child:
            with _outbox_lock:
                _outbox.append((self.id, args))
        else:
            self._fn(*args)


def relayed(fn: Callable[..., None]) -> Relay:
    """``fn``, made safe to call from a listing process."""
    return fn if isinstance(fn, Relay) else Relay(fn)


def _drain() -> list[tuple[int, tuple[Any, ...]]]:
    global _outbox
    with _outbox_lock:
        calls, _outbox = _outbox, []
    return calls


def _replay(calls: list[tuple[int, tuple[Any, ...]]]) -> None:
    for relay_id, args in calls:
        relay = _relays.get(relay_id)
        if relay is not None:
            relay(*args)


# -- processes ------------------------------------------------------------------------------------
_heap_frozen_for_good = False


def freeze_heap_for_good() -> None:
    """Hand everything alive now to the collector's permanent generation, for the rest of the process.

    ``run_in_processes`` freezes the heap around its forks and thaws it after, unless the process
    froze it for good through this (a host that freezes its own heap calls this instead of
    ``gc.freeze()``, or its freeze is undone after the next run's forks). It is told rather than
    asking ``gc.get_freeze_count()``, which counts the frozen objects one by one: 17-35 ms of a
    10,000-number plan's 0.43 s with three SDKs imported.
    """
    global _heap_frozen_for_good
    gc.freeze()
    _heap_frozen_for_good = True


def fork_available() -> bool:
    """Whether listings may run in forked processes here (Linux: fork is the default and well-trodden)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def _die_with_parent() -> None:
    """Ask Linux to kill this child when the parent dies (a SIGKILLed run must not leave listings behind)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _log_write_locks() -> list[Any]:
    """structlog's per-file write locks: a PrintLogger holds one while it writes a line.

    Held by another thread at the moment of fork, such a lock would stay held forever in the
    child, whose first log line would then hang (seen in the fault matrix, where runs log from
    several threads). ``run_in_processes`` holds them all across ``fork`` instead; the stdlib
    ``logging`` module does the same for its handlers by itself.
    """
    from structlog import _output  # structlog's module; its locks have no public accessor

    locks = getattr(_output, "WRITE_LOCKS", {})
    for _ in range(3):
        try:
            return list(locks.values())
        except RuntimeError:  # another thread made the first logger of a file just now
            continue
    return []


def _child_main(conn: multiprocessing.connection.Connection, job: Job, parent: int, held: list[Any],
                gate: tuple[int, int] | None) -> None:
    global _in_child
    for lock in held:  # taken by the parent for the fork: the child's copies are released here
        lock.release()
    if gate is not None:
        os.close(gate[1])
    _in_child = True
    _drain()  # calls recorded by other threads of the parent at fork time are not this child's
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    if gate is not None:
        os.read(gate[0], 1)  # end of file once the parent has forked every listing (see run_in_processes)
        os.close(gate[0])
    if job.nice:
        with contextlib.suppress(OSError):  # a priority is a preference: never a reason to fail
            os.nice(job.nice)
    # The listing hands messages to a sender thread: a send blocks while the parent is busy
    # writing another listing's batch, and the listing must not stall on it (it would turn the
    # parent's writes into everyone's latency). A bounded queue still holds a listing back when
    # the parent falls far behind.
    outbox: queue.Queue[Any] = queue.Queue(maxsize=_CHILD_QUEUE)
    sender = threading.Thread(target=_send_all, args=(conn, outbox, job.plain_rows), name="numsync-send",
                              daemon=True)
    sender.start()
    try:
        for kind, payload in job.run():
            outbox.put((kind, payload, _drain()))
        cpu = os.times()
        outbox.put(("cpu", round(cpu.user + cpu.system, 3), []))  # this listing's CPU, for the run's stats
        outbox.put(("done", None, _drain()))
    except BaseException as exc:  # reported to the parent, which owns the outcome
        outbox.put(("error", job.error_text(exc), _drain()))
    finally:
        outbox.put(None)
        sender.join()
        conn.close()


_CHILD_QUEUE = 32  # batches (2,000 rows each) a listing may run ahead of the parent


# A batch of a ``plain_rows`` job's rows crosses the pipe as MessagePack rather than pickled:
# pickle spent 1.5 us on each Vapi row (its datetime above all) where msgspec spends 0.1, and reads
# it back as fast (0.4 us), so a million-number run spends 1.5 s less CPU on it. A batch msgspec
# cannot write (text that is not valid Unicode) goes pickled, as any other message.
_ROWS_OUT = msgspec.msgpack.Encoder()
_ROWS_IN = msgspec.msgpack.Decoder(list[tuple[Any, ...]])


def _packed(message: tuple[str, Any, Any]) -> tuple[str, Any, Any]:
    kind, payload, calls = message
    if kind == "rows":
        with contextlib.suppress(msgspec.EncodeError, UnicodeEncodeError, TypeError, OverflowError):
            return "packed-rows", _ROWS_OUT.encode(payload), calls
    return message


def _unpacked(kind: str, payload: Any) -> tuple[str, Any]:
    return ("rows", _ROWS_IN.decode(payload)) if kind == "packed-rows" else (kind, payload)


def _send_all(conn: multiprocessing.connection.Connection, outbox: queue.Queue[Any], plain_rows: bool) -> None:
    while (message := outbox.get()) is not None:
        try:
            conn.send(_packed(message) if plain_rows else message)
        except (OSError, ValueError):  # the parent is gone: nothing left to tell
            os._exit(1)


def _fork(job: Job, ctx: Any, gate: tuple[int, int] | None) -> tuple[multiprocessing.connection.Connection, Any]:
    """Start ``job`` in a forked child; returns the end of its pipe the parent reads, and the child."""
    receive, send = ctx.Pipe(duplex=False)
    held = _log_write_locks()
    proc = ctx.Process(target=_child_main, args=(send, job, os.getpid(), held, gate),
                       name=f"numsync-list-{job.tag}", daemon=True)
    for lock in held:
        lock.acquire()
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns about fork in a process with threads; the child runs only its
            # job, and the log locks it needs are held across the fork.
            warnings.simplefilter("ignore", DeprecationWarning)
            proc.start()
    finally:
        for lock in held:
            lock.release()
        send.close()
    return receive, proc


def run_in_processes(jobs: list[Job]) -> Generator[Event, None, None]:
    """Run each job in a forked child; yield its messages as they arrive, then ("done"|"error").

    Where this process runs other threads, every child waits until all are forked. A listing that
    started at once would set such a thread working while its siblings are forked (an emulator in
    the same process serving it, in the demo and the tests), and a sibling forked while that thread
    held one of OpenSSL's locks inherited that lock held, for good: its first TLS call waited
    forever (seen in the property tests). Nothing in this process talks to the APIs while the
    children are forked. Where this thread is the only one (the CLI's case), nothing can be set
    working, and each child starts as soon as it is forked: the first listing no longer waits for
    the forks of the others (2-6 ms each), so ``jobs`` come longest first.

    Closing the iterator early (the caller failed) kills the children that are still listing.
    """
    ctx = multiprocessing.get_context("fork")
    children: dict[multiprocessing.connection.Connection, tuple[str, Any]] = {}
    # the children read (go, forking); it ends when no process holds ``forking`` (None: each child
    # starts as soon as it is forked)
    gate = os.pipe() if threading.active_count() > 1 else None
    try:
        # Objects alive now are the parent's: frozen, the children's garbage collector never walks
        # them, so it does not write to (and copy) every page of the parent's heap it inherited.
        # A process that froze its heap for good (``freeze_heap_for_good``, the CLI's) keeps it so.
        gc.freeze()
        try:
            for job in jobs:
                pipe, proc = _fork(job, ctx, gate)
                children[pipe] = (job.tag, proc)
        finally:
            if not _heap_frozen_for_good:
                gc.unfreeze()
            for fd in gate or ():  # every child forked (or forking failed): they start now
                os.close(fd)
    except OSError as exc:  # no fork now (process or memory limits): list in threads instead
        log.warning("listing_processes_unavailable", error=f"{exc.__class__.__name__}: {exc.strerror}",
                    fallback="threads")
        _stop(children)
        yield from run_in_threads(jobs)
        return
    try:
        while children:
            for conn in multiprocessing.connection.wait(list(children)):
                assert isinstance(conn, multiprocessing.connection.Connection)
                tag, proc = children[conn]
                try:
                    kind, payload, calls = conn.recv()
                    kind, payload = _unpacked(kind, payload)
                except (EOFError, OSError):
                    proc.join()
                    ended = f"its listing process ended unexpectedly (exit code {proc.exitcode})"
                    kind, payload, calls = "error", ended, []
                _replay(calls)
                if kind in ("done", "error"):
                    del children[conn]
                    conn.close()
                    proc.join()  # it exits right after its last message
                yield tag, kind, payload
    finally:
        _stop(children)  # still listing: the caller gave up


def _stop(children: dict[multiprocessing.connection.Connection, tuple[str, Any]]) -> None:
    for conn, (_tag, proc) in children.items():
        conn.close()
        if proc.is_alive():
            proc.kill()
        proc.join()
    children.clear()


# -- threads (where fork is not available, or configured off) -------------------------------------
def run_in_threads(jobs: list[Job], *, maxsize: int = 16) -> Generator[Event, None, None]:
    """The same jobs in threads of this process: the same events, one core."""
    q: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
    stop = threading.Event()

    def work(job: Job) -> None:
        try:
            for kind, payload in job.run():
                if stop.is_set():
                    return
                q.put((job.tag, kind, payload))
            q.put((job.tag, "done", None))
        except BaseException as exc:  # reported to the caller's thread, which owns the outcome
            q.put((job.tag, "error", job.error_text(exc)))

    threads = [threading.Thread(target=work, args=(job,), daemon=True, name=f"list-{job.tag}") for job in jobs]
    for t in threads:
        t.start()
    pending = len(threads)
    try:
        while pending:
            event = q.get()
            if event[1] in ("done", "error"):
                pending -= 1
            yield event
    finally:
        stop.set()  # producers still listing (the caller failed) stop at their next message
        with contextlib.suppress(queue.Empty):
            while True:  # and one blocked on the full queue gets its place
                q.get_nowait()
