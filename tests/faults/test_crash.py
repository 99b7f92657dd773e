"""Crash safety: SIGKILL a real ``numsync reconcile`` at random points of its apply, rerun, count imports.

Vapi has no idempotency key, so exactly-once rests on the journal (an action is committed
``started`` before its create leaves) and on looking for a number in Vapi before creating it. The
worst moment for that is the window in which Vapi has created a number and numsync has not yet heard:
every create here is processed at once but answered 0.5 s late (``timeout_after``), so kills land
in that window. Kill points are drawn from a seed that is printed (and shown in the terminal
summary); ``NUMSYNC_CRASH_SEED=<seed>`` replays the same points. Each point runs on SQLite and on
PostgreSQL, whose lock and journal behave differently when their holder dies.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from numsync.app import run_once
from numsync.config import parse_config
from numsync.daemon.db import make_engine
from numsync.daemon.models import Action, Run
from numsync.sandbox.server import EmulatorServer
from numsync.sandbox.vapi import VapiEmulator

from .conftest import note_crash_seed

SEED = int(os.environ.get("NUMSYNC_CRASH_SEED") or random.SystemRandom().randrange(2**32))
KILL_POINTS = 4
NUMBERS = [f"+1628555{3000 + i}" for i in range(8)]
ANSWER_DELAY = 0.5  # how long each processed create waits before its answer leaves
CONCURRENCY = 3  # imports in flight at once (vapi.max_concurrency): a kill can catch several
API_KEY = "k-crash-test"
CREDENTIAL = "cred-crash-trunk"


def kill_point(index: int) -> tuple[str, int]:
    """The ``index``-th kill point of this seed: (trigger, k).

    ``in-flight``: Vapi has processed create k+1 and its answer is still on its way.
    ``journaled``: k actions are settled in the journal and another one is claimed. Not after
    the last but one: the last imports start together, so their settling can come too close
    together for a poll to see one of them still claimed.
    """
    rng = random.Random(f"{SEED}:{index}")
    trigger = rng.choice(("in-flight", "journaled"))
    return trigger, rng.randrange(len(NUMBERS) - (trigger == "journaled"))


@pytest.fixture
def vapi() -> Iterator[tuple[VapiEmulator, EmulatorServer]]:
    emu = VapiEmulator(api_key=API_KEY)
    with EmulatorServer(emu) as server:
        yield emu, server


def write_config(tmp_path: Path, db_url: str, vapi_url: str) -> Path:
    csv = tmp_path / "trunk.csv"
    csv.write_text("number\n" + "".join(f"{n}\n" for n in NUMBERS))
    path = tmp_path / "numsync.yaml"
    path.write_text(f"""
database_url: {db_url}
vapi:
  api_key: {API_KEY}
  base_url: {vapi_url}
  timeout: 5
  backoff_base: 0.01
  requests_per_second: 0
  max_concurrency: {CONCURRENCY}
sources:
  - name: trunk
    kind: byo
    numbers_file: {csv}
    vapi_credential_id: {CREDENTIAL}
    import:
      assistant_id: asst-crash
reports:
  dir: {tmp_path / 'reports'}
  formats: [json]
""")
    return path


def wait_until(predicate: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    """Poll ``predicate`` (a condition, not a duration) until it holds; fail if the process ends first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"numsync exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout:.0f}s")
        time.sleep(0.005)


def journal(db_url: str, columns: tuple[Any, ...] = (Action.run_id, Action.state)) -> list[tuple[Any, ...]]:
    """``columns`` (by default run id and state) of every action, oldest first."""
    engine = make_engine(db_url, null_pool=True)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.select(*columns).order_by(Action.id))]
    except sa.exc.OperationalError:  # SQLite while the schema is being created: nothing journaled yet
        return []
    finally:
        engine.dispose()


def journal_states(db_url: str) -> list[str]:
    return [state for _, state in journal(db_url)]


@pytest.mark.parametrize("index", range(1, KILL_POINTS + 1), ids=lambda i: f"kill{i}")
def test_sigkill_during_apply_then_rerun_imports_each_number_once(
    index: int, tmp_path: Path, db_url: str, vapi: tuple[VapiEmulator, EmulatorServer],
    request: pytest.FixtureRequest,
) -> None:
    emu, server = vapi
    trigger, k = kill_point(index)
    note_crash_seed(request.config, SEED)
    replay = f"replay with NUMSYNC_CRASH_SEED={SEED} (kill point {index}: {trigger}, k={k})"
    print(replay)
    cfg_path = write_config(tmp_path, db_url, server.url)
    emu.faults.add("timeout_after", method="POST", path=r"^/phone-number$", times=None, delay=ANSWER_DELAY)
    env = {name: value for name, value in os.environ.items() if not name.startswith("NUMSYNC_")}
    log = (tmp_path / "numsync.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "numsync", "reconcile", "--config", str(cfg_path)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        if trigger == "in-flight":
            wait_until(lambda: len(emu.records()) >= k + 1, proc, f"Vapi processing create {k + 1}")
        else:
            def claimed_after_k() -> bool:
                states = journal_states(db_url)
                return sum(s in ("done", "failed") for s in states) >= k and "started" in states
            wait_until(claimed_after_k, proc, f"{k} settled actions and a claimed one")
        killed_at = datetime.now(UTC)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL, replay
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
    emu.faults.clear()

    # Killed mid-apply: nothing duplicated, at most the imports in flight left started.
    at_kill = journal(db_url, (Action.number, Action.state))
    states = [state for _, state in at_kill]
    assert emu.duplicate_creates == [], replay
    assert states.count("started") <= CONCURRENCY, f"{states}; {replay}"
    by_number = dict(at_kill)
    for rec in emu.records():
        if killed_at - datetime.fromisoformat(rec["createdAt"]) < timedelta(seconds=ANSWER_DELAY - 0.1):
            # This create's answer was still delayed when the kill landed: its action must be
            # journaled as started (committed before the request left), or recovery could not find it.
            assert by_number[rec["number"]] == "started", \
                f"the create of {rec['number']} Vapi processed is not journaled as started: {by_number}; {replay}"
    assert len(emu.records()) >= sum(s == "done" for s in states), replay

    config = parse_config(cfg_path.read_text(), origin=str(cfg_path), env={})
    out = run_once(config, mode="reconcile")
    for number in NUMBERS:
        assert len(emu.by_number(number)) == 1, f"{number} held {len(emu.by_number(number))} times; {replay}"
    assert emu.duplicate_creates == [], replay
    assert len(emu.records()) == len(NUMBERS), replay
    assert out.result.exit_code == 0, f"{out.result.error}; {replay}"
    after = journal(db_url)
    states = [state for _, state in after]
    assert "started" not in states, f"{after}; {replay}"
    rerun = [state for run_id, state in after if run_id == out.result.run_id]
    assert "planned" not in rerun, f"the rerun left planned actions: {rerun}; {replay}"
    assert states.count("done") == len(NUMBERS), f"one done action per number expected: {states}; {replay}"
    engine = make_engine(db_url, null_pool=True)
    try:
        with engine.connect() as conn:
            runs = conn.execute(sa.select(Run.status).order_by(Run.seq)).scalars().all()
    finally:
        engine.dispose()
    assert runs == ["interrupted", "finished"], f"{runs}; {replay}"
