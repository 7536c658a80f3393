"""Host faults are never scored: descriptors, missing files, one connection budget (issue 21).

Low descriptor limits are set in a subprocess (`resource.setrlimit` there, never in this process).
The subprocesses print one JSON line of what they saw; the tests assert those outcomes.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest
from conftest import REPO, build_medal_db

import sqlenv  # noqa: F401  (registers TextToSQL-v0)
from sqlenv.datasets import Dataset, Example
from sqlenv.env import TextToSQLEnv
from sqlenv.executor import BUDGET_ENV, Executor, HostError, connection_budget

HANG_GUARD = 300  # seconds: a subprocess that takes longer has hung

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")

# Sixteen envs walk the generated test split's databases, each answering with the gold SQL.
ENVS_SCRIPT = """
import json, os, resource, sys
soft, n_envs, walk = map(int, sys.argv[1:4])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
import gymnasium as gym
import sqlenv

envs = [gym.make("TextToSQL-v0", dataset="generated", split="test") for _ in range(n_envs)]
first = {}
for i, example in enumerate(envs[0].unwrapped.dataset):
    first.setdefault(example.db_key, i)
indices = list(first.values())
seen = {"steps": 0, "wrong": [], "raised": [], "peak": 0, "databases": len(indices)}
for round_ in range(walk):
    for k, env in enumerate(envs):
        index = indices[(k * 7 + round_) % len(indices)]
        try:
            env.reset(options={"index": index})
            _, reward, _, _, info = env.step(env.unwrapped.example(index).gold_sql)
            seen["peak"] = max(seen["peak"], len(os.listdir("/proc/self/fd")) - 1)
        except Exception as exc:
            seen["raised"].append(repr(exc)[:300])
            continue
        seen["steps"] += 1
        if reward != 1.0 or info["error"] is not None:
            seen["wrong"].append([index, reward, info["error"], info["error_message"][:200]])
print(json.dumps(seen))
"""

# Eight Executors walk many small databases; then the host takes every descriptor left.
EXECUTORS_SCRIPT = """
import json, os, resource, sys
soft, n_dbs = int(sys.argv[1]), int(sys.argv[2])
folder = sys.argv[3]
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from sqlenv.executor import Executor, HostError

paths = [os.path.join(folder, f"{i}.sqlite") for i in range(n_dbs)]
executors = [Executor() for _ in range(8)]
seen = {"ok": 0, "wrong": [], "raised": [], "peak": 0}
for ex in executors:
    for i, path in enumerate(paths):
        try:
            result = ex.execute(path, "SELECT COUNT(*) FROM Medal")
            seen["peak"] = max(seen["peak"], len(os.listdir("/proc/self/fd")) - 1)
        except Exception as exc:
            seen["raised"].append(repr(exc)[:300])
            continue
        if result.rows == ((3,),):
            seen["ok"] += 1
        else:
            seen["wrong"].append([i, result.error, result.message[:200]])

# The host now takes every descriptor left.
for ex in executors:
    ex.close()
hoard = []
try:
    while True:
        hoard.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
try:
    result = executors[0].execute(paths[0], "SELECT COUNT(*) FROM Medal")
    seen["exhausted"] = ["result", result.error, result.message]
except HostError as exc:
    seen["exhausted"] = ["HostError", str(exc), exc.path, exc.cause]
except Exception as exc:
    seen["exhausted"] = ["other exception", repr(exc)]

# Freeing one descriptor (as the host) lets the next query through: nothing stayed broken.
os.close(hoard.pop())
seen["after"] = executors[0].execute(paths[0], "SELECT COUNT(*) FROM Medal").rows == ((3,),)
print(json.dumps(seen))
"""

# One Executor holds an idle cached connection; the host takes every other descriptor; a second
# Executor opening a new database gets one by the retry, which closes the idle connection.
RETRY_SCRIPT = """
import json, os, resource, sys
folder = sys.argv[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from sqlenv.executor import Executor

first, second = Executor(), Executor()
a, b = os.path.join(folder, "0.sqlite"), os.path.join(folder, "1.sqlite")
seen = {"warm": first.execute(a, "SELECT COUNT(*) FROM Medal").rows == ((3,),)}
hoard = []
try:
    while True:
        hoard.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
result = second.execute(b, "SELECT COUNT(*) FROM Medal")
seen["second"] = [result.rows == ((3,),), result.error, result.message]
for fd in hoard:
    os.close(fd)
seen["first_again"] = first.execute(a, "SELECT COUNT(*) FROM Medal").rows == ((3,),)
print(json.dumps(seen))
"""

# A cached connection, then no descriptor left: a query whose sort spills to a temporary file fails
# to open it. The query is not to blame: HostError, never a scored result.
SORT_SCRIPT = """
import json, os, resource, sys
path = sys.argv[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from sqlenv.executor import Executor, HostError

ex = Executor(timeout=30)
sql = "SELECT COUNT(*) FROM (SELECT location || medal_id || type AS x FROM Medal ORDER BY x)"
seen = {"before": ex.execute(path, sql).rows}
hoard = []
try:
    while True:
        hoard.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
try:
    result = ex.execute(path, sql)
    seen["exhausted"] = ["result", result.error, result.message]
except HostError as exc:
    seen["exhausted"] = ["HostError", str(exc), exc.path, exc.cause]
for fd in hoard:
    os.close(fd)
seen["after"] = ex.execute(path, sql).rows
print(json.dumps(seen))
"""


def _run(script: str, *args) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def small_dbs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("small-dbs")
    for i in range(40):
        build_medal_db(folder / f"{i}.sqlite", rows=3)
    return folder


def test_sixteen_envs_under_a_128_descriptor_limit_score_every_correct_query():
    # 16 envs x 40 distinct databases: 640 cached connections without a shared budget.
    seen = _run(ENVS_SCRIPT, 128, 16, 40)
    assert seen["databases"] >= 40
    assert seen["raised"] == []
    assert seen["wrong"] == []
    assert seen["steps"] == 16 * 40
    assert seen["peak"] < 128


def test_eight_executors_under_a_64_descriptor_limit_then_exhausted_by_the_host(small_dbs):
    seen = _run(EXECUTORS_SCRIPT, 64, 40, small_dbs)  # 320 connections without a shared budget
    assert seen["raised"] == [] and seen["wrong"] == []
    assert seen["ok"] == 8 * 40
    assert seen["peak"] < 64
    kind, message, path, cause = seen["exhausted"]
    assert kind == "HostError"
    assert path == str(small_dbs / "0.sqlite") and str(small_dbs / "0.sqlite") in message
    assert "too many open files (EMFILE" in cause and "limit is 64" in cause
    assert "retried once" in message
    assert seen["after"] is True


def test_a_host_fault_is_retried_after_closing_idle_connections(small_dbs):
    seen = _run(RETRY_SCRIPT, small_dbs)
    assert seen["warm"] is True
    assert seen["second"] == [True, None, ""]
    assert seen["first_again"] is True


def test_a_query_that_cannot_open_a_temporary_file_raises_host_error(tmp_path):
    path = build_medal_db(tmp_path / "big.sqlite", rows=300_000)  # its sort spills to a temp file
    seen = _run(SORT_SCRIPT, path)
    assert seen["before"] == [[300_000]]
    kind, message, where, cause = seen["exhausted"]
    assert kind == "HostError" and where == str(path)
    assert message.startswith(f"a query on {str(path)!r} failed: too many open files (EMFILE")
    assert "retried once" in message and "unable to open database file" in cause
    assert seen["after"] == [[300_000]]


class _OneDatabase(Dataset):
    """One question about the file `path` (which a test then removes or spoils)."""

    name = "one"

    def __init__(self, path: Path):
        super().__init__([Example(id="q0", question="How many medals?", answer="3", db_key="db")])
        self.path = path

    def database(self, example: Example) -> Path:
        return self.path


def test_a_removed_database_raises_host_error_through_step_not_a_reward(tmp_path):
    path = build_medal_db(tmp_path / "gone.sqlite", rows=3)
    env = TextToSQLEnv(dataset=_OneDatabase(path))
    env.reset(options={"index": 0})
    path.unlink()
    with pytest.raises(HostError, match="gone.sqlite.*no such file") as caught:
        env.step("SELECT COUNT(*) FROM Medal")
    assert caught.value.path == str(path)
    build_medal_db(path, rows=3)  # back: the same env scores the same query as correct
    env.reset(options={"index": 0})
    assert env.step("SELECT COUNT(*) FROM Medal")[1] == 1.0
    env.close()


def test_a_spoiled_database_raises_host_error_at_reset_and_step(tmp_path):
    path = tmp_path / "junk.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    env = TextToSQLEnv(dataset=_OneDatabase(path))
    with pytest.raises(HostError, match="junk.sqlite.*not a usable SQLite database"):
        env.reset(options={"index": 0})
    with pytest.raises(HostError, match="junk.sqlite.*not a usable SQLite database"):
        env.unwrapped.executor.execute(path, "SELECT 1")
    env.close()


def test_a_missing_database_raises_host_error_from_worker_groups(tmp_path):
    path = build_medal_db(tmp_path / "group.sqlite", rows=3)
    with Executor() as ex:
        ok = ex.execute_group(path, ["SELECT COUNT(*) FROM Medal"] * 3, workers=2)
        assert [r.rows for r in ok] == [((3,),)] * 3
        path.unlink()
        with pytest.raises(HostError, match="group.sqlite.*no such file"):
            ex.execute_group(path, ["SELECT COUNT(*) FROM Medal"] * 3, workers=2)
        with pytest.raises(HostError, match="group.sqlite.*no such file"):
            ex.execute_group(path, ["SELECT COUNT(*) FROM Medal"] * 3, workers=0)


def test_host_error_pickles_with_its_fields():
    message = "cannot open database '/x.sqlite': out of memory"
    error = HostError(message, "/x.sqlite", "out of memory")
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.path, copy.cause) == (str(error), error.path, error.cause)


def test_the_budget_is_half_the_descriptor_limit_or_the_environment_variable(monkeypatch):
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    monkeypatch.delenv(BUDGET_ENV, raising=False)
    if soft != resource.RLIM_INFINITY:
        assert connection_budget() == max(4, min(soft, 1 << 20) // 2 - 16)
    monkeypatch.setenv(BUDGET_ENV, "3")
    assert connection_budget() == 3
    monkeypatch.setenv(BUDGET_ENV, "lots")  # not a number: the default
    assert connection_budget() >= 4


def test_the_budget_bounds_the_descriptors_of_many_executors(small_dbs, monkeypatch):
    monkeypatch.setenv(BUDGET_ENV, "5")
    before = len(os.listdir("/proc/self/fd"))
    executors = [Executor() for _ in range(4)]
    try:
        for ex in executors:
            for i in range(20):
                result = ex.execute(small_dbs / f"{i}.sqlite", "SELECT COUNT(*) FROM Medal")
                assert result.rows == ((3,),)
        assert len(os.listdir("/proc/self/fd")) - before <= 5
    finally:
        for ex in executors:
            ex.close()


def test_gym_make_envs_share_the_budget(monkeypatch):
    monkeypatch.setenv(BUDGET_ENV, "4")
    before = len(os.listdir("/proc/self/fd"))
    envs = [gym.make("TextToSQL-v0", dataset="generated", split="dev") for _ in range(3)]
    try:
        for index in range(0, 60, 3):
            for env in envs:
                env.reset(options={"index": index})
                gold = env.unwrapped.example(index).gold_sql
                assert env.step(gold)[1] == 1.0
        assert len(os.listdir("/proc/self/fd")) - before <= 4
    finally:
        for env in envs:
            env.close()


def test_threads_share_a_small_budget_without_losing_a_query(small_dbs, monkeypatch):
    import threading

    monkeypatch.setenv(BUDGET_ENV, "3")
    executors = [Executor() for _ in range(4)]
    answers: list = []

    def walk(ex: Executor) -> None:
        for round_ in range(3):
            for i in range(20):
                result = ex.execute(small_dbs / f"{i}.sqlite", "SELECT COUNT(*) FROM Medal")
                answers.append(result.rows)

    threads = [threading.Thread(target=walk, args=(ex,)) for ex in executors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG_GUARD)
    for ex in executors:
        ex.close()
    assert answers == [((3,),)] * (4 * 3 * 20)


FORK_SCRIPT = """
import os, sys
from sqlenv.executor import Executor

ex = Executor()
path = sys.argv[1]
assert ex.execute(path, "SELECT COUNT(*) FROM Medal").rows == ((3,),)
pid = os.fork()
if pid == 0:  # the child: the inherited Executor starts afresh and answers
    ok = ex.execute(path, "SELECT COUNT(*) FROM Medal").rows == ((3,),)
    os._exit(0 if ok else 1)
_, status = os.waitpid(pid, 0)
print('{"child_exit": %d, "parent_ok": %s}' % (
    os.waitstatus_to_exitcode(status),
    str(ex.execute(path, "SELECT COUNT(*) FROM Medal").rows == ((3,),)).lower()))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_with_its_own_connections(small_dbs):
    assert _run(FORK_SCRIPT, small_dbs / "0.sqlite") == {"child_exit": 0, "parent_ok": True}
