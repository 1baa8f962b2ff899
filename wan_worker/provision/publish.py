"""Build the models bundle: every manifest file, verified, in one Hugging Face repository as
`<folder>/<filename>`, uploaded in one commit with huggingface_hub's upload API.

`python -m wan_worker.provision bundle --repo owner/name` runs it (docs/operations.md, "The
models bundle"):
1. the provisioner makes every file present and verified under the models root, exactly as at
   boot (downloads resume, sha256 checked, markers written; files already verified cost a stat);
2. `HfApi.create_repo` (kept if it exists), then one `create_commit` adding each file under its
   manifest path, a README listing them, and deleting files left in the manifest's folders by
   an older bundle. Each file's sha256 comes from its verified marker, so nothing is hashed
   twice; huggingface_hub sends only what the Hub does not hold yet.

Large files go through the Hub's LFS protocol (huggingface_hub's batch API, with multipart
uploads when the Hub asks for them): it is what the command is tested against, and a self-hosted
Hub or mirror speaks it too. `--xet` uses the Xet protocol instead (hf_xet: chunk-level
deduplication, so an interrupted or repeated upload sends only new chunks). Either way the Hub
records each file's sha256, which RunPod's cache then names its blob by.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from wan_worker.errors import ConfigError, PublishError, redact
from wan_worker.provision import verify
from wan_worker.provision.manifest import Manifest, ModelSpec, load_manifest
from wan_worker.provision.provisioner import Provisioner
from wan_worker.settings.provisioning import ProvisionSettings, bundle_repo

if TYPE_CHECKING:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

Log = Callable[[str], None]


@dataclass(frozen=True)
class BundleResult:
    repo: str
    branch: str
    commit: str
    url: str
    files: tuple[str, ...]
    deleted: tuple[str, ...]
    protocol: str


@contextmanager
def transfer_protocol(use_xet: bool) -> Iterator[str]:
    """Xet or LFS for this upload, whatever HF_HUB_DISABLE_XET says; restored afterwards."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_DISABLE_XET
    constants.HF_HUB_DISABLE_XET = not use_xet  # huggingface_hub reads it at each upload
    try:
        yield "Xet" if use_xet and importlib.util.find_spec("hf_xet") is not None else "LFS"
    finally:
        constants.HF_HUB_DISABLE_XET = saved


def _origin(model: ModelSpec, marker: verify.Marker | None) -> str:
    """Where a file came from, for the README: no query strings (signed URLs), no secrets."""
    label = marker.source if marker is not None else model.sources[0].label()
    return redact(label.split("?", 1)[0])


def readme(repo: str, manifest: Manifest, root: Path) -> bytes:
    lines = [
        f"# {repo}",
        "",
        "The model files of the Wan2.2 image-to-video worker, one per entry of its manifest",
        "(`workflows/models.json`), each at `<folder>/<filename>`: the layout the worker links",
        "into ComfyUI's model folders. Set an endpoint's **Model** field to this repository and",
        f"`MODELS_BUNDLE_REPO={repo}`: the worker then uses RunPod's cached copy in place.",
        "",
        "Built by `python -m wan_worker.provision bundle`; rebuild it rather than edit it.",
        "Each file keeps its own licence, from the source listed.",
        "",
        "| file | bytes | sha256 | from |",
        "|---|---|---|---|",
    ]
    for model in manifest.models:
        marker = verify.read_marker(root, model.relpath)
        size = marker.size if marker is not None else model.size
        sha = (marker.sha256 if marker is not None else None) or model.sha256 or ""
        lines.append(f"| `{model.relpath}` | {size} | `{sha}` | {_origin(model, marker)} |")
    return ("\n".join(lines) + "\n").encode("utf-8")


def _addition(root: Path, model: ModelSpec) -> CommitOperationAdd:
    """The file as an upload; its sha256 taken from the marker the provisioner just wrote."""
    from huggingface_hub import CommitOperationAdd

    path = root / model.folder / model.filename
    operation = CommitOperationAdd(path_in_repo=model.relpath, path_or_fileobj=str(path))
    marker = verify.read_marker(root, model.relpath)
    if marker is not None and marker.sha256 and marker.matches(path.stat()):
        operation.upload_info.sha256 = bytes.fromhex(marker.sha256)
    return operation


def _stale(api: HfApi, repo: str, branch: str, manifest: Manifest) -> list[CommitOperationDelete]:
    """Files an older bundle left in the manifest's folders (RunPod would cache them too)."""
    from huggingface_hub import CommitOperationDelete

    folders = {m.folder for m in manifest.models}
    wanted = {m.relpath for m in manifest.models}
    present = api.list_repo_files(repo, revision=branch)
    return [
        CommitOperationDelete(path_in_repo=path)
        for path in sorted(present)
        if path.split("/", 1)[0] in folders and path not in wanted
    ]


def gather(settings: ProvisionSettings, manifest: Manifest, log: Log) -> None:
    """Every file present and verified under the models root, from the manifest's own sources
    (never from the bundle being built)."""
    Provisioner(replace(settings, bundle_repo="", bundle_revision=None), log=log).run(manifest)


def build_bundle(
    settings: ProvisionSettings,
    *,
    repo: str,
    private: bool = False,
    branch: str = "main",
    use_xet: bool = False,
    log: Log = print,
) -> BundleResult:
    repo = bundle_repo(repo, "--repo")
    if not repo:
        raise ConfigError("--repo is required: the bundle repository as owner/name")
    if settings.hf_offline:
        raise ConfigError("HF_HUB_OFFLINE is set; building the bundle needs the Hub. Unset it.")
    manifest = load_manifest(settings.manifest_path)
    gather(settings, manifest, log)

    from huggingface_hub import CommitOperationAdd, HfApi

    root = settings.models_root
    api = HfApi(endpoint=settings.hf_endpoint, token=settings.hf_token or None)
    files = tuple(m.relpath for m in manifest.models)
    try:
        url = api.create_repo(repo, private=private or None, exist_ok=True, repo_type="model")
        if branch != "main":
            api.create_branch(repo, branch=branch, exist_ok=True)
        deletions = _stale(api, repo, branch, manifest)
        operations: list[CommitOperationAdd | CommitOperationDelete] = [
            _addition(root, m) for m in manifest.models
        ]
        operations.append(CommitOperationAdd("README.md", readme(repo, manifest, root)))
        operations += deletions
        for op in deletions:
            log(f"[bundle] {op.path_in_repo}: not in the manifest any more; deleting it")
        with transfer_protocol(use_xet) as protocol:
            log(f"[bundle] uploading {len(files)} files to {repo}@{branch} over {protocol}")
            info = api.create_commit(
                repo,
                operations=operations,
                commit_message=f"Models bundle: {len(files)} files from the manifest",
                revision=branch,
            )
    except Exception as exc:  # huggingface_hub raises many kinds; each means the same here
        raise PublishError(_failure(repo, exc, use_xet)) from exc
    return BundleResult(
        repo=repo,
        branch=branch,
        commit=info.oid,
        url=str(url),
        files=files,
        deleted=tuple(op.path_in_repo for op in deletions),
        protocol=protocol,
    )


def _failure(repo: str, exc: BaseException, use_xet: bool) -> str:
    text = (str(exc) or type(exc).__name__).strip()
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text} ({cause})"
    text = " ".join(text.split())[:600]
    fix = (
        f"Fix: give HF_TOKEN a token with write access to {repo.partition('/')[0]} (or log in "
        "with `hf auth login`), check the network and HF_ENDPOINT, then run the command again: "
        "files the Hub already holds are not sent twice."
    )
    if use_xet:
        fix += " If the Hub or mirror does not speak Xet, run it without --xet (LFS)."
    return redact(f"Uploading the models bundle to {repo} failed: {text}. {fix}")


def report(result: BundleResult, env: dict[str, str] | None = None) -> str:
    """What to put into the endpoint, for stdout."""
    env = dict(os.environ) if env is None else env
    lines = [
        f"Bundle {result.repo}@{result.branch}: commit {result.commit} ({len(result.files)} "
        f"files over {result.protocol}"
        + (f", {len(result.deleted)} stale deleted" if result.deleted else "")
        + ")",
        f"  {result.url}",
        "",
        "RunPod endpoint:",
        f"  Model (cached models):  {result.repo}",
        f"  MODELS_BUNDLE_REPO={result.repo}",
        f"  MODELS_BUNDLE_REVISION={result.commit}   (optional: pins these exact files)",
    ]
    if result.branch != "main":
        lines.append(
            f"  Note: the bundle is on branch {result.branch}. RunPod's Model field names a "
            "repository; which branches its cache holds is not documented, so build on main "
            "for the cached path."
        )
    return redact("\n".join(lines), env)
