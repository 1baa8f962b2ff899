"""Per-file claims, so that many workers sharing one models root download each file once.

Workers on several hosts share a RunPod network volume, a network filesystem on which `flock`
cannot be trusted. A claim is therefore a plain file, `.<name>.claim` beside the model file:

- **Created atomically, with its owner inside from the start.** The owner's identity (host,
  pid, pid namespace, a random token) is written to a file of the owner's own,
  `.<name>.<token>.owner`, which is then hard-linked to the claim's name. `link` fails when the
  name exists, and the NFS server decides that, so one creator wins; a winner whose reply was
  lost (the retried `link` then fails) sees its own file's link count at 2 and knows it won
  (the method open(2) gives for NFS). Where hard links are not supported, `O_CREAT|O_EXCL`.
- **Kept alive by a heartbeat.** A thread of the owner sets the claim's mtime every
  `heartbeat_s` (the server's clock: `utime` with no time asks the server to use its own).
- **Stale** when a waiter has seen its mtime unchanged for `stale_s` by the waiter's own
  monotonic clock (no two hosts' clocks are compared), or at once when the owner is a process
  of the waiter's own pid namespace that is gone. Waiters read the claim by opening it, which
  on NFS revalidates its attributes (close-to-open consistency), so a cached mtime cannot make
  a live owner look dead.
- **Taken over race-free.** The waiters that find the claim of token T stale each try to create
  `.<name>.claim.takeover-T` (atomically, as above); only the one that does renames the stale
  claim to a name of its own, checks that what it moved is still T's claim (else puts it back),
  and deletes it. Then every waiter competes for a new claim as at first.
- **Lost** when the claim's name no longer holds its owner's token (an owner that stopped
  beating for `stale_s`, then woke up): the owner stops writing and waits like the others. It
  learns so from its heartbeat, or, after a pause in its download (`PAUSE_S`), from reading
  the claim before its next request or write: a woken owner need not wait for its next beat.

A partial download is the owner's own (`.<name>.<token>.partial`, beside the final file). A new
owner adopts the largest partial a previous owner left, by renaming it to its own name, and
resumes it; the others are deleted. The final name only ever appears through the rename of a
partial whose size and sha256 were checked, by the process that holds the claim.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from wan_worker.errors import ClaimLost, ClaimWaitTimeout
from wan_worker.provision.transfer import PartialState, human_bytes, state_path

Log = Callable[[str], None]
ABANDONED_OWNER_FILE_NS = 60 * 10**9
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK}
# What may follow `.<name>.` in a temporary name of the file's (the claim itself excepted).
_LEFTOVER = re.compile(
    r"^(?:[0-9a-f]{16}\.partial(?:\.state\.json(?:\.tmp)?)?"
    r"|[0-9a-f]{16}\.(?:stale|link)"
    r"|claim(?:\.takeover-\w+)?(?:\.[0-9a-f]{16}\.(?:owner|stale))?)$"
)


def _pid_namespace() -> str:
    """Where a pid means the same process: the kernel's boot and this pid namespace."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return ""


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    token: str  # 16 hex characters, new for every run
    pidns: str  # "" when unknown: then the pid is never used to judge the owner

    @classmethod
    def this_process(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), secrets.token_hex(8), _pid_namespace())

    def describe(self) -> str:
        return f"host {self.host} pid {self.pid}"

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Owner | None:
        try:
            data = json.loads(raw)
            return cls(str(data["host"]), int(data["pid"]), str(data["token"]), str(data["pidns"]))
        except (ValueError, KeyError, TypeError):
            return None


def pid_gone(pid: int) -> bool:
    """True when no process (or only a zombie) has this pid in our namespace."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


@dataclass(frozen=True)
class ClaimSnapshot:
    """A claim file as read at one moment (`read_claim`): waiters compare two snapshots' mtime
    to judge its heartbeat, and a takeover names the claim by its `claim_id`."""

    owner: Owner | None  # None: unreadable (being written, or not ours to parse)
    claim_id: str  # the owner's token, else the file's inode: what a takeover names
    mtime_ns: int


def read_claim(path: Path) -> ClaimSnapshot | None:
    """Open and read the claim (an open revalidates NFS's cached attributes); None if absent."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        owner = Owner.decode(os.read(fd, 4096))
    finally:
        os.close(fd)
    claim_id = owner.token if owner is not None else f"inode{st.st_ino}"
    return ClaimSnapshot(owner, claim_id, st.st_mtime_ns)


class ModelFilePaths:
    """The paths that belong to one model file: the file itself (`dest`), its claim, and the
    temporary files of each process that owned it (partial, link, stale, owner, takeover)."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.dir = dest.parent
        self.name = dest.name
        self.claim = self.dir / f".{self.name}.claim"

    def of_owner(self, token: str, kind: str) -> Path:
        """The temporary file `kind` (partial, link, stale, ...) of the owner `token`."""
        return self.dir / f".{self.name}.{token}.{kind}"

    def takeover(self, claim_id: str) -> Path:
        return self.dir / f".{self.name}.claim.takeover-{claim_id}"

    def leftovers(self) -> list[Path]:
        """Every temporary name of this file's (its claim excepted), whoever made it."""
        prefix = f".{self.name}."
        found = []
        try:
            with os.scandir(self.dir) as entries:
                for entry in entries:
                    rest = entry.name[len(prefix) :]
                    if entry.name.startswith(prefix) and rest != "claim" and _LEFTOVER.match(rest):
                        found.append(self.dir / entry.name)
        except FileNotFoundError:
            pass
        return found

    def partials(self, exclude: str) -> list[Path]:
        """Partial downloads of owners other than `exclude`."""
        return [
            p
            for p in self.leftovers()
            if (p.name.endswith(".partial") and p.name != f".{self.name}.{exclude}.partial")
        ]


def create(path: Path, owner: Owner) -> bool:
    """Create `path` holding `owner`, atomically; False when it exists already."""
    own = path.with_name(f"{path.name}.{owner.token}.owner")
    fd = os.open(own, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, owner.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(own, path)
        return True
    except FileNotFoundError:
        return False  # our owner file was cleaned away as abandoned: compete again
    except FileExistsError:
        return os.stat(own).st_nlink == 2  # our link happened; only its reply was lost
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        return _create_exclusive(path, owner)
    finally:
        own.unlink(missing_ok=True)


def _create_exclusive(path: Path, owner: Owner) -> bool:
    """For filesystems without hard links: O_EXCL (atomic on NFSv3 and later)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, owner.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


#: A pause this long between two writes of a download (the process was frozen, its host paused,
#: the source stalled) may have outlasted the stale bound: the claim is read again before the
#: next write. A flowing download writes every few milliseconds, so this costs nothing then.
PAUSE_S = 1.0


class Claim:
    """A claim this process holds."""

    def __init__(self, paths: ModelFilePaths, owner: Owner) -> None:
        self.paths = paths
        self.owner = owner
        self.lost = threading.Event()
        self._check_lock = threading.Lock()
        self._checked_at = _clocks()

    @property
    def partial(self) -> Path:
        return self.paths.of_owner(self.owner.token, "partial")

    def beat(self) -> None:
        """Refresh the heartbeat, or notice that the claim is no longer ours."""
        if self.lost.is_set():
            return
        view = read_claim(self.paths.claim)
        if view is None or view.claim_id != self.owner.token:
            self.lost.set()
            return
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.paths.claim)  # no time given: NFS sets the server's own

    def check(self) -> None:
        """Before each write of the download: raise ClaimLost once the claim is known taken
        over. Cheap while the download flows (the flag the heartbeat sets); after a pause of
        PAUSE_S or more, the claim itself is read first, so a process that wakes up after its
        claim was taken over stops before it writes or asks for another byte, whether or not
        its heartbeat is due yet. The writers wait for that read."""
        with self._check_lock:
            now = _clocks()
            paused = max(now[0] - self._checked_at[0], now[1] - self._checked_at[1])
            if paused >= PAUSE_S and not self.lost.is_set():
                self._read_owner()
            self._checked_at = _clocks()
        if self.lost.is_set():
            raise ClaimLost(f"{self.paths.dest.name}: another worker took the download over")

    def confirm(self) -> None:
        """Raise ClaimLost unless the claim is still ours (checked again, not remembered)."""
        self._read_owner()
        if self.lost.is_set():
            raise ClaimLost(f"{self.paths.dest.name}: another worker took the download over")

    def _read_owner(self) -> None:
        """Set `lost` unless the claim file still holds this process's token."""
        view = read_claim(self.paths.claim)
        if view is None or view.claim_id != self.owner.token:
            self.lost.set()

    def adopt_partial(self, say: Log) -> None:
        """Take over the largest partial another owner left (renamed to our name); delete the
        others, with their state files."""
        best: tuple[int, Path] | None = None
        for path in self.paths.partials(self.owner.token):
            state = PartialState.load(state_path(path))
            done = state.done.total() if state is not None else -1
            if best is None or done > best[0]:
                if best is not None:
                    _remove_partial(best[1])
                best = (done, path)
            else:
                _remove_partial(path)
        if best is None:
            return
        done, path = best
        if done <= 0:
            _remove_partial(path)
            return
        try:
            os.rename(state_path(path), state_path(self.partial))
            os.rename(path, self.partial)
        except FileNotFoundError:
            _remove_partial(path)
            _remove_partial(self.partial)
            return
        say(f"{self.paths.dest.name}: adopted the partial download a previous owner left "
            f"({human_bytes(done)} on disk)")  # fmt: skip

    def clean(self) -> None:
        """Once the file is in place: delete every temporary name of it but our claim. Another
        creator's owner file lives for a moment only; one that is a minute older than our
        claim (the server's clock for both) was left by a process killed in that moment."""
        try:
            now = os.stat(self.paths.claim).st_mtime_ns
        except FileNotFoundError:
            now = 0
        for path in self.paths.leftovers():
            if path.name.endswith(".owner"):
                with contextlib.suppress(FileNotFoundError):
                    if now - path.stat().st_mtime_ns < ABANDONED_OWNER_FILE_NS:
                        continue
            path.unlink(missing_ok=True)

    def release(self) -> None:
        view = read_claim(self.paths.claim)
        if view is not None and view.claim_id == self.owner.token:
            self.paths.claim.unlink(missing_ok=True)


def _clocks() -> tuple[float, float]:
    """Both clocks: a monotonic clock misses a pause of the whole machine (a VM paused by its
    host), the wall clock jumps with NTP; a pause either one shows counts."""
    return time.monotonic(), time.time()


def _remove_partial(path: Path) -> None:
    path.unlink(missing_ok=True)
    state_path(path).unlink(missing_ok=True)


def break_stale(paths: ModelFilePaths, view: ClaimSnapshot, me: Owner) -> bool:
    """Remove the claim seen as `view` if it is still that one; True if this process did."""
    if not create(paths.takeover(view.claim_id), me):
        return False  # another waiter is taking it over
    moved = paths.of_owner(me.token, "stale")
    try:
        os.rename(paths.claim, moved)
    except FileNotFoundError:
        if not moved.exists():
            return False  # its owner released it meanwhile
    now = read_claim(moved)
    if (
        now is not None and now.claim_id != view.claim_id
    ):  # a new claim replaced it: put that one back
        with contextlib.suppress(FileExistsError):
            os.link(moved, paths.claim)
        moved.unlink(missing_ok=True)
        return False
    moved.unlink(missing_ok=True)
    return True


class Heartbeat:
    """One thread refreshing every claim this process holds."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._claims: set[Claim] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, claim: Claim) -> None:
        with self._lock:
            self._claims.add(claim)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="claims", daemon=True)
                self._thread.start()

    def discard(self, claim: Claim) -> None:
        with self._lock:
            self._claims.discard(claim)

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            thread.join()
        self._stop = threading.Event()

    def _run(self) -> None:
        stop = self._stop
        while not stop.wait(self.interval_s):
            with self._lock:
                claims = list(self._claims)
            for claim in claims:
                with contextlib.suppress(OSError):  # a flaky mount: the next beat tries again
                    claim.beat()


@dataclass(frozen=True)
class ClaimTimings:
    stale_s: float  # a claim whose heartbeat has not moved for this long is taken over
    wait_s: float  # the longest one file waits for other workers
    log_s: float  # between two "waiting for" lines

    @property
    def heartbeat_s(self) -> float:
        return self.stale_s / 6

    @property
    def poll_s(self) -> float:
        return min(1.0, self.stale_s / 6)


def _partial_progress(paths: ModelFilePaths, owner: Owner | None) -> str:
    if owner is None:
        return "bytes so far unknown"
    try:
        st = paths.of_owner(owner.token, "partial").stat()
    except OSError:
        return "no bytes on disk yet"
    written = min(st.st_blocks * 512, st.st_size)
    return f"{human_bytes(written)} of {human_bytes(st.st_size)} on disk so far"


def claim_or_wait(
    paths: ModelFilePaths,
    relpath: str,
    me: Owner,
    timing: ClaimTimings,
    *,
    ready: Callable[[], bool],
    say: Log,
) -> Claim | None:
    """Hold the file's claim (returned), or see the file made ready by another worker (None).

    Waits while a live owner holds the claim, taking a stale one over, for at most
    `timing.wait_s`; then raises ClaimWaitTimeout with what it waited for.
    """
    paths.dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    logged = float("-inf")
    seen: tuple[str, int] | None = None
    seen_since = started
    while True:
        if ready():
            return None
        if create(paths.claim, me):
            return Claim(paths, me)
        view = read_claim(paths.claim)
        if view is None:
            continue  # released between our two looks: compete again at once
        now = time.monotonic()
        if seen != (view.claim_id, view.mtime_ns):
            seen, seen_since = (view.claim_id, view.mtime_ns), now
        who = view.owner.describe() if view.owner is not None else "an unknown owner"
        stale = ""
        owner = view.owner
        if (
            owner is not None
            and owner.pidns
            and owner.pidns == me.pidns
            and owner.pid != me.pid
            and pid_gone(owner.pid)
        ):
            stale = f"its process ({who}) is gone"
        if not stale and now - seen_since >= timing.stale_s:
            stale = f"no heartbeat from {who} for {now - seen_since:.0f}s"
        if stale:
            if break_stale(paths, view, me):
                say(f"{relpath}: took over the claim: {stale}")
                continue
            if now - seen_since >= 2 * timing.stale_s:  # a taker died mid-takeover
                _drop(paths.takeover(view.claim_id), me)
        waited = now - started
        if waited >= timing.wait_s:
            raise ClaimWaitTimeout(
                f"{relpath}: waited {waited:.0f}s (at most {timing.wait_s:g}s) for "
                f"another worker ({who}) that holds its download claim "
                f"{paths.claim} with a live heartbeat ({_partial_progress(paths, view.owner)}). "
                "Fix: if that worker is still downloading from a slow source, start this one "
                "again (RunPod does that itself for a serverless worker): it waits anew; if it "
                f"is stuck, stop it (its claim is taken over {timing.stale_s:g}s after its "
                f"heartbeat stops); if no worker is running, delete {paths.claim}"
            )
        if now - logged >= timing.log_s:
            logged = now
            say(
                f"{relpath}: waiting for {who}, which holds its claim "
                f"({_partial_progress(paths, view.owner)}; heartbeat seen "
                f"{now - seen_since:.0f}s ago; waited {waited:.0f}s of at most "
                f"{timing.wait_s:g}s)"
            )
        time.sleep(timing.poll_s)


def _drop(path: Path, me: Owner) -> None:
    """Delete a stale takeover lock (moved to a name of our own first, so only one deletes)."""
    moved = path.with_name(f"{path.name}.{me.token}.stale")
    with contextlib.suppress(FileNotFoundError):
        os.rename(path, moved)
        moved.unlink()
