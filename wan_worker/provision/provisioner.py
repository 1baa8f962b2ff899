"""Make every model in the manifest present and verified under the models root.

For each model, cheapest first:
1. the file is there and its verified marker matches its identity: done (one `stat`);
2. the file is there without a valid marker: verify it once (size, sha256) and record a marker;
3. RunPod's Hugging Face cache has it: link to it in place;
4. otherwise download it from the first source that answers, the next ones as fallbacks.

With a models bundle configured (`wan_worker.provision.bundle`), the bundle is every model's
first source: its cached copy is looked at first, then it is the first download. A file that is
a link into the cache whose marker no longer matches (another host's cache, same path) is
linked afresh before anything is read through it.

Free space is checked before any download starts. A model that cannot be had fails the whole
run with a message naming the file and every source tried, with the reason for each.

Steps 2-4 change files, so they run under the file's claim (`wan_worker.provision.claims`):
any number of processes, on any number of hosts, may provision one models root at once; each
file is verified, linked or downloaded by one of them while the others wait for it (or take
its claim over when its owner dies), and nobody waits longer than the wait bound
(`ProvisionSettings.wait_s`, 1800 s).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from wan_worker.errors import ClaimLost, DiskSpaceError, ProvisionError, SourceFailed, redact
from wan_worker.provision import bundle, verify
from wan_worker.provision.claims import (
    Claim,
    ClaimTimings,
    Heartbeat,
    ModelFilePaths,
    Owner,
    claim_or_wait,
    create,
)
from wan_worker.provision.hfcache import find_cached
from wan_worker.provision.manifest import Manifest, ModelSpec, load_manifest
from wan_worker.provision.transfer import (
    DownloadProgress,
    Remote,
    RetryPolicy,
    human_bytes,
    resumable_state,
    transfer,
)
from wan_worker.settings.provisioning import ProvisionSettings

Log = Callable[[str], None]
FreeBytes = Callable[[Path], int]


def disk_free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


@dataclass
class Outcome:
    relpath: str
    action: str  # "marker", "verified", "linked", "downloaded", "shared" (by another worker)
    source: str = ""
    fetched: int = 0


@dataclass
class Report:
    root: Path
    outcomes: list[Outcome] = field(default_factory=list)
    hashed: int = 0
    fetched_bytes: int = 0
    seconds: float = 0.0

    def count(self, action: str) -> int:
        return sum(1 for o in self.outcomes if o.action == action)


@dataclass
class _PendingFile:
    """A model file not yet ready at the start of the run, and the work on it so far."""

    model: ModelSpec
    dest: Path
    paths: ModelFilePaths
    claim: Claim | None = None  # held by this process while it works on the file
    tried: list[str] = field(default_factory=list)
    remote: Remote | None = None
    source_index: int = -1
    bytes_to_fetch: int = 0  # what its download still has to fetch (a partial holds the rest)

    def held(self) -> Claim:
        """The claim this process holds on the file; ClaimLost if it holds none."""
        if self.claim is None:
            raise ClaimLost(f"{self.model.relpath}: not claimed by this process")
        return self.claim

    @property
    def tmp(self) -> Path:
        """This process's partial download."""
        return self.held().partial


class Provisioner:
    def __init__(
        self,
        settings: ProvisionSettings,
        *,
        log: Log = print,
        free_bytes: FreeBytes = disk_free_bytes,
    ) -> None:
        self.settings = settings
        self.log = log
        self.free_bytes = free_bytes
        self.root = settings.models_root
        self.report = Report(root=self.root)
        self._lock = threading.Lock()
        self.me = Owner.this_process()
        self.timing = ClaimTimings(
            stale_s=settings.claim_stale_s,
            wait_s=settings.wait_s,
            log_s=settings.progress_interval_s,
        )
        self._heartbeat = Heartbeat(self.timing.heartbeat_s)

    # ---------------------------------------------------------------- internals
    def _say(self, text: str) -> None:
        self.log(redact(f"[provision] {text}"))

    def _hash(self, path: Path, streamed: str | None = None) -> str:
        """The file's sha256: `streamed` if the transfer computed it, else one read of it."""
        with self._lock:
            self.report.hashed += 1
        return streamed if streamed is not None else verify.sha256_file(path)

    def _done(self, outcome: Outcome) -> None:
        with self._lock:
            self.report.outcomes.append(outcome)
            self.report.fetched_bytes += outcome.fetched

    def _dest(self, model: ModelSpec) -> Path:
        return self.root / model.folder / model.filename

    # ---------------------------------------------------------------- phase 1: local
    def _check_marker(self, model: ModelSpec, dest: Path) -> bool:
        """True when the file is there and its marker vouches for it (no hashing)."""
        try:
            st = dest.stat()
        except OSError:
            return False
        marker = verify.read_marker(self.root, model.relpath)
        if marker is None or not marker.matches(st):
            return False
        if model.size is not None and marker.size != model.size:
            return False
        return not (model.sha256 and marker.sha256 != model.sha256)

    def _verify_existing(self, model: ModelSpec, dest: Path, plan: _PendingFile) -> bool:
        """A file without a valid marker: check size and sha256 once against the best facts
        available (manifest, else the first source that answers)."""
        size, sha, source = model.size, model.sha256, "manifest"
        if sha is None:
            remote = self._open_first(plan)
            if remote is not None:
                size = size or remote.size
                sha = remote.sha256
                source = remote.label
        actual_size = dest.stat().st_size
        if size is not None and actual_size != size:
            self._say(f"{model.relpath}: on disk {actual_size} bytes, expected {size}; replacing")
            return False
        checked = False
        if sha is not None:
            self._say(f"{model.relpath}: verifying sha256 of the file found on disk (once)")
            if self._hash(dest) != sha:
                self._say(f"{model.relpath}: sha256 does not match {source}; replacing")
                return False
            checked = True
        else:
            self._say(f"{model.relpath}: no sha256 is published for it; accepted on size")
        verify.write_marker(
            self.root,
            model.relpath,
            dest,
            size=actual_size,
            sha256=sha,
            sha256_checked=checked,
            source=source,
        )
        self._done(Outcome(model.relpath, "verified", source))
        return True

    # ---------------------------------------------------------------- phase 2: cache
    def _link_cached(self, model: ModelSpec, dest: Path) -> bool:
        for spec in model.sources:
            cached = find_cached(self.settings.hf_cache_dir, spec)
            if cached is None:
                note = bundle.missing_note(self.settings, spec)
                if note:
                    self._say(f"{model.relpath}: {note}; trying its other sources")
                continue
            if model.size is not None and cached.size != model.size:
                self._say(
                    f"{model.relpath}: cached copy in {spec.repo} has {cached.size} bytes, "
                    f"the manifest says {model.size}; not used"
                )
                continue
            if model.sha256 and cached.sha256 and cached.sha256 != model.sha256:
                self._say(
                    f"{model.relpath}: cached copy in {spec.repo} has sha256 {cached.sha256}, "
                    "not the manifest's; not used"
                )
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp_link = ModelFilePaths(dest).of_owner(self.me.token, "link")
            tmp_link.unlink(missing_ok=True)
            tmp_link.symlink_to(cached.path)
            os.replace(tmp_link, dest)
            verify.write_marker(
                self.root,
                model.relpath,
                dest,
                size=cached.size,
                sha256=cached.sha256 or model.sha256,
                sha256_checked=bool(cached.sha256 and model.sha256),
                source=f"RunPod cache {cached.path}",
            )
            self._say(f"{model.relpath}: using RunPod's cached copy in place ({cached.path})")
            self._done(Outcome(model.relpath, "linked", str(cached.path)))
            return True
        return False

    # ---------------------------------------------------------------- phase 3: download
    def _open_first(self, plan: _PendingFile, start: int = 0) -> Remote | None:
        from wan_worker.provision.sources import open_source

        for index in range(start, len(plan.model.sources)):
            spec = plan.model.sources[index]
            label = spec.label(self.settings.r2.bucket)
            try:
                remote = open_source(spec, self.settings)
            except SourceFailed as exc:
                plan.tried.append(f"{label}: {exc}")
                continue
            if plan.model.size is not None and remote.size != plan.model.size:
                plan.tried.append(
                    f"{label}: has {remote.size} bytes, the manifest says {plan.model.size}"
                )
                continue
            if plan.model.sha256 and remote.sha256 and remote.sha256 != plan.model.sha256:
                plan.tried.append(f"{label}: publishes sha256 {remote.sha256}, not the manifest's")
                continue
            if plan.model.sha256:
                remote.identity = f"sha256:{plan.model.sha256}"  # any source may resume it
            plan.remote, plan.source_index = remote, index
            return remote
        plan.remote, plan.source_index = None, len(plan.model.sources)
        return None

    def _partial_bytes(self, plan: _PendingFile) -> int:
        state = resumable_state(plan.tmp, plan.remote) if plan.remote is not None else None
        return state.done.total() if state is not None else 0

    def _check_space(self, plans: list[_PendingFile]) -> None:
        need = sum(p.bytes_to_fetch for p in plans)
        free = self.free_bytes(self.root)
        if need + self.settings.min_free_bytes <= free:
            return
        lines = ", ".join(f"{p.model.relpath} ({human_bytes(p.bytes_to_fetch)})" for p in plans)
        raise DiskSpaceError(
            f"Not enough disk space under {self.root}: the models still to download need "
            f"{human_bytes(need)} plus a {human_bytes(self.settings.min_free_bytes)} margin, "
            f"but only {human_bytes(free)} is free. Missing: {lines}. Fix: attach a larger "
            "network volume (or container disk), free space there, or point MODELS_ROOT at a "
            "disk with room. Nothing was downloaded."
        )

    def _download(self, plan: _PendingFile, progress: DownloadProgress) -> None:
        model = plan.model
        policy = RetryPolicy(self.settings.retries, self.settings.backoff_s)
        while plan.remote is not None:
            remote = plan.remote
            started = time.monotonic()
            self._say(
                f"{model.relpath}: downloading {human_bytes(remote.size)} from {remote.label}"
            )
            try:
                done = transfer(
                    remote,
                    plan.tmp,
                    connections=self.settings.connections,
                    chunk_bytes=self.settings.chunk_bytes,
                    policy=policy,
                    progress=progress,
                    name=model.relpath,
                    log=self._say,
                    check=plan.claim.check if plan.claim is not None else None,
                )
            except ClaimLost:
                progress.forget(model.relpath)
                raise
            except SourceFailed as exc:
                progress.forget(model.relpath)
                plan.tried.append(f"{remote.label}: {exc}")
                self._say(f"{model.relpath}: {remote.label} failed ({exc}); trying the next source")
                self._open_first(plan, plan.source_index + 1)
                continue
            progress.forget(model.relpath)
            seconds = max(time.monotonic() - started, 1e-6)
            self._say(
                f"{model.relpath}: transferred {human_bytes(done.fetched)} in {seconds:.1f}s "
                f"({human_bytes(done.fetched / seconds)}/s), sha256 "
                f"{'computed on the way' if done.sha256 else 'to be read from disk'}; verifying"
            )
            if self._accept_download(plan, remote, done.sha256):
                self._say(f"{model.relpath}: ready ({remote.label})")
                self._done(Outcome(model.relpath, "downloaded", remote.label, done.fetched))
                return
            self._open_first(plan, plan.source_index + 1)
        raise ProvisionError(self._failure_text([plan]))

    def _accept_download(
        self, plan: _PendingFile, remote: Remote, streamed_sha256: str | None
    ) -> bool:
        model, tmp = plan.model, plan.tmp
        size = tmp.stat().st_size
        if size != remote.size or (model.size is not None and size != model.size):
            plan.tried.append(f"{remote.label}: downloaded {size} bytes, expected {remote.size}")
            tmp.unlink(missing_ok=True)
            return False
        expected = model.sha256 or remote.sha256
        actual = self._hash(tmp, streamed_sha256)
        if expected is not None and actual != expected:
            plan.tried.append(f"{remote.label}: sha256 {actual} does not match {expected}")
            self._say(f"{model.relpath}: sha256 mismatch from {remote.label}; discarded")
            tmp.unlink(missing_ok=True)
            return False
        if expected is None:
            self._say(
                f"{model.relpath}: sha256 {actual} (no published value to compare; "
                "add it to the manifest to pin it)"
            )
        plan.held().confirm()  # only the claim's holder may put a file in place
        os.replace(tmp, plan.dest)
        verify.write_marker(
            self.root,
            model.relpath,
            plan.dest,
            size=size,
            sha256=actual,
            sha256_checked=expected is not None,
            source=remote.label,
        )
        return True

    # ---------------------------------------------------------------- links
    def _make_links(self, manifest: Manifest) -> None:
        for model in manifest.models:
            for template in model.link_into:
                folder = Path(
                    template.format(comfyui_dir=self.settings.comfyui_dir, models_root=self.root)
                )
                link = folder / model.filename
                target = self._dest(model)
                folder.mkdir(parents=True, exist_ok=True)
                if link.is_symlink() or not link.exists():
                    tmp_link = folder / f".{model.filename}.{self.me.token}.link"
                    tmp_link.unlink(missing_ok=True)
                    tmp_link.symlink_to(target)
                    os.replace(tmp_link, link)
                else:
                    self._say(f"{link} is a regular file; left as it is")

    def _failure_text(self, plans: list[_PendingFile]) -> str:
        parts = []
        for plan in plans:
            tried = (
                "; ".join(f"({i}) {t.rstrip('.')}" for i, t in enumerate(plan.tried, 1))
                or "no sources"
            )
            parts.append(f"{plan.model.relpath} could not be downloaded. Sources tried: {tried}")
        return redact(
            " | ".join(parts)
            + ". Fix: check the network and the source settings (R2_ENDPOINT, R2_BUCKET, "
            "R2_ACCESS_KEY, R2_SECRET_KEY; HF_TOKEN for gated repos), or place the file under "
            f"{self.root} yourself."
        )

    # ---------------------------------------------------------------- run
    def run(self, manifest: Manifest | None = None) -> Report:
        started = time.monotonic()
        manifest = bundle.with_bundle(
            manifest or load_manifest(self.settings.manifest_path), self.settings
        )
        self.root.mkdir(parents=True, exist_ok=True)
        self._say(f"models root: {self.root} ({self.settings.models_root_reason})")
        if line := bundle.describe(self.settings):
            self._say(line)
        pending: list[_PendingFile] = []
        for model in manifest.models:
            dest = self._dest(model)
            if self._check_marker(model, dest):
                self._done(Outcome(model.relpath, "marker"))
                continue
            pending.append(_PendingFile(model=model, dest=dest, paths=ModelFilePaths(dest)))
        if pending:
            self._make_ready(pending)
        self._make_links(manifest)
        self.report.seconds = time.monotonic() - started
        self._say(
            f"all {len(manifest.models)} models ready in {self.report.seconds:.2f}s "
            f"({self.report.count('marker')} already verified, {self.report.count('verified')} "
            f"verified now, {self.report.count('linked')} from the RunPod cache, "
            f"{self.report.count('downloaded')} downloaded, "
            f"{self.report.count('shared')} made ready by another worker, "
            f"{human_bytes(self.report.fetched_bytes)} fetched)"
        )
        return self.report

    # ---------------------------------------------------------------- claims
    def _hold(self, plan: _PendingFile, claim: Claim) -> None:
        plan.claim = claim
        self._heartbeat.add(claim)

    def _release(self, plan: _PendingFile, *, ready: bool) -> None:
        """Release the file's claim; once the file is in place, delete every temporary name of
        it too (a partial download is kept otherwise, for the next owner to resume)."""
        claim, plan.claim = plan.claim, None
        if claim is None:
            return
        self._heartbeat.discard(claim)
        if ready:
            claim.clean()
        claim.release()

    def _prepare(self, plan: _PendingFile) -> _PendingFile | None:
        """Under the file's claim: None when it is ready (verified on disk, linked from the
        cache, or made ready by another worker meanwhile), else the plan with a source opened."""
        model, dest = plan.model, plan.dest
        if self._check_marker(model, dest):
            self._done(Outcome(model.relpath, "shared"))
            return None
        if dest.is_symlink() and not dest.exists():
            dest.unlink()  # a link into a cache that is gone
        plan.held().adopt_partial(self._say)
        link = dest.is_symlink()  # into a cache: relink, never read 38 GB through it
        if link and self._link_cached(model, dest):
            return None
        if dest.exists() and self._verify_existing(model, dest, plan):
            return None
        if not link and self._link_cached(model, dest):
            return None
        if plan.remote is None and plan.source_index < 0:
            self._open_first(plan)
        return plan

    def _claim_and_prepare(self, plan: _PendingFile) -> _PendingFile | None:
        """Claim the file if nobody holds it and prepare it; a plan held by another worker is
        returned without a claim, to wait for."""
        plan.paths.dir.mkdir(parents=True, exist_ok=True)
        if not create(plan.paths.claim, self.me):
            return plan
        self._hold(plan, Claim(plan.paths, self.me))
        try:
            result = self._prepare(plan)
        except BaseException:
            self._release(plan, ready=False)
            raise
        if result is None:
            self._release(plan, ready=True)
        return result

    def _wait_for_claim(self, plan: _PendingFile) -> bool:
        """Wait for the file's claim; True once held and the file still needs a download."""
        model = plan.model
        claim = claim_or_wait(
            plan.paths,
            model.relpath,
            self.me,
            self.timing,
            ready=lambda: self._check_marker(model, plan.dest),
            say=self._say,
        )
        if claim is None:
            self._say(f"{model.relpath}: ready (made ready by another worker)")
            self._done(Outcome(model.relpath, "shared"))
            return False
        self._hold(plan, claim)
        plan.remote, plan.source_index = None, -1
        if self._prepare(plan) is None:
            self._release(plan, ready=True)
            return False
        if plan.remote is None:
            raise ProvisionError(self._failure_text([plan]))
        plan.bytes_to_fetch = plan.remote.size - self._partial_bytes(plan)
        self._check_space([plan])
        return True

    def _download_under_claim(
        self, plan: _PendingFile, progress: DownloadProgress, downloads: threading.Semaphore
    ) -> None:
        """Download the file under its claim, waiting for it first if another worker holds
        it; a claim lost mid-download (taken over) means waiting again."""
        try:
            while True:
                if plan.claim is None and not self._wait_for_claim(plan):
                    return
                try:
                    with downloads:
                        self._download(plan, progress)
                except ClaimLost:
                    self._say(f"{plan.model.relpath}: another worker took its download over")
                    self._release(plan, ready=False)
                    continue
                self._release(plan, ready=True)
                return
        finally:
            self._release(plan, ready=False)

    def _make_ready(self, pending: list[_PendingFile]) -> None:
        try:
            self._make_ready_under_claims(pending)
        finally:
            for plan in pending:
                self._release(plan, ready=False)
            self._heartbeat.stop()

    def _make_ready_under_claims(self, pending: list[_PendingFile]) -> None:
        with ThreadPoolExecutor(max_workers=len(pending)) as pool:
            results = list(pool.map(self._claim_and_prepare, pending))
        todo = [p for p in results if p is not None]
        if not todo:
            return
        owned = [p for p in todo if p.claim is not None]
        unavailable = [p for p in owned if p.remote is None]
        if unavailable:
            raise ProvisionError(self._failure_text(unavailable))
        for plan in owned:
            if plan.remote is not None:  # each has one by now
                plan.bytes_to_fetch = plan.remote.size - self._partial_bytes(plan)
        if owned:
            self._check_space(owned)
        progress = DownloadProgress(self._say, self.settings.progress_interval_s)
        progress.start()
        downloads = threading.Semaphore(self.settings.max_parallel_files)
        errors: list[ProvisionError] = []
        try:
            with ThreadPoolExecutor(max_workers=len(todo)) as pool:
                futures = [
                    pool.submit(self._download_under_claim, plan, progress, downloads)
                    for plan in todo
                ]
                for future in futures:
                    try:
                        future.result()
                    except ProvisionError as exc:
                        errors.append(exc)
        finally:
            progress.stop()
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise ProvisionError(" | ".join(e.message for e in errors))
