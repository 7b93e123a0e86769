"""``scripts/bootstrap`` waits for a package lock another apt or dpkg holds (unattended-upgrades on an
astro Pi) instead of failing at once: ``scripts/bootstrap wait-apt-lock`` runs only that wait.

The lock files are the test's own (ZWO_ALPACA_DPKG_LOCKS), locked the way apt and dpkg lock theirs
(an fcntl write lock, the file kept open); the real dpkg lock is never touched and apt never runs.
Both ways of telling a lock is held are checked: fuser, and the kernel's lock table /proc/locks.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.servers import REPO

BOOTSTRAP = REPO / "scripts" / "bootstrap"

PROBES = [
    pytest.param("fuser", marks=pytest.mark.skipif(shutil.which("fuser") is None, reason="fuser (psmisc) missing")),
    pytest.param("proc-locks", marks=pytest.mark.skipif(not os.access("/proc/locks", os.R_OK),
                                                        reason="no /proc/locks")),
]


class HeldLock:
    """A lock file held as dpkg holds /var/lib/dpkg/lock: open, with an fcntl write lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
        fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        if self.fd is not None:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


@pytest.fixture
def locks(tmp_path: Path) -> Iterator[tuple[Path, HeldLock]]:
    """Two lock files: the first free (it exists, nobody holds it), the second held by this process."""
    free = tmp_path / "lock-frontend"
    free.touch()
    held = HeldLock(tmp_path / "lists-lock")
    yield free, held
    held.release()


def start_wait(probe: str, lock_files: list[Path], timeout: int, note: int = 1) -> subprocess.Popen[str]:
    env = dict(os.environ, ZWO_ALPACA_DPKG_LOCKS=":".join(map(str, lock_files)), ZWO_ALPACA_LOCK_PROBE=probe,
               ZWO_ALPACA_DPKG_LOCK_TIMEOUT=str(timeout), ZWO_ALPACA_DPKG_LOCK_NOTE=str(note))
    return subprocess.Popen(["bash", str(BOOTSTRAP), "wait-apt-lock"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=5)
        pytest.fail(f"the wait did not end within {timeout} s:\n{out}\n{err}")


@pytest.mark.parametrize("probe", PROBES)
def test_waits_while_held_and_proceeds_when_released(probe: str, locks: tuple[Path, HeldLock]) -> None:
    free, held = locks
    proc = start_wait(probe, [free, held.path], timeout=60, note=1)
    try:
        time.sleep(3.5)
        assert proc.poll() is None, f"bootstrap did not wait for the held lock: {proc.communicate()}"
        released = time.monotonic()
        held.release()
        out, err = finish(proc, timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    took = time.monotonic() - released
    assert proc.returncode == 0, err
    notes = [line for line in out.splitlines() if "waiting for another package manager" in line]
    # one line at once, then one per ZWO_ALPACA_DPKG_LOCK_NOTE second; naming the file and its holder
    assert len(notes) >= 2, out
    assert str(held.path) in notes[0] and f"PID {os.getpid()} " in notes[0], notes[0]
    assert str(free) not in out
    assert took < 3, f"went on {took:.1f} s after the lock was released"
    print(f"[bootstrap-lock] probe={probe}: proceeded {took:.2f} s after release; {len(notes)} notes in 3.5 s")


@pytest.mark.parametrize("probe", PROBES)
def test_gives_up_after_the_timeout_naming_the_holder(probe: str, locks: tuple[Path, HeldLock]) -> None:
    free, held = locks
    started = time.monotonic()
    out, err = finish(start_wait(probe, [free, held.path], timeout=2, note=30), timeout=15)
    took = time.monotonic() - started
    assert "gave up after" in err and str(held.path) in err and f"PID {os.getpid()} " in err, (out, err)
    assert "never delete the lock file" in err
    assert 1 <= took < 8, took
    assert len([line for line in out.splitlines() if "waiting for" in line]) == 1, out  # note every 30 s only


@pytest.mark.parametrize("probe", PROBES)
def test_goes_on_at_once_when_nothing_is_held(probe: str, tmp_path: Path) -> None:
    files = [tmp_path / "lock-frontend", tmp_path / "lock"]
    files[0].touch()  # the second does not exist, as on a machine where apt never ran
    started = time.monotonic()
    proc = start_wait(probe, files, timeout=60)
    out, err = finish(proc, timeout=10)
    assert proc.returncode == 0 and out == "" and err == "", (out, err)
    assert time.monotonic() - started < 2


@pytest.mark.skipif(not os.access("/proc/locks", os.R_OK), reason="no /proc/locks")
def test_a_lock_on_another_file_is_not_mistaken_for_ours(tmp_path: Path) -> None:
    """/proc/locks lists every lock on the machine: only the lock file's own device and inode count."""
    other = HeldLock(tmp_path / "someone-elses.lock")
    mine = tmp_path / "lock"
    mine.touch()
    try:
        proc = start_wait("proc-locks", [mine], timeout=60)
        out, err = finish(proc, timeout=10)
    finally:
        other.release()
    assert proc.returncode == 0 and out == "", (out, err)
