"""The models bundle: one Hugging Face repository holding every manifest file as
`<folder>/<filename>`, for RunPod's cached models (one repository per endpoint).

With `MODELS_BUNDLE_REPO` set, each model's first source is its file in the bundle, so:
1. RunPod's cache of the bundle is looked at before any other copy, and a file found there is
   linked in place (no copy, no download), verified by its blob's name (the LFS sha256) against
   the manifest's size and sha256 where those are pinned;
2. a file missing from the cache (another host, a bundle not yet cached, an older bundle) is
   downloaded from the bundle on the Hub first, then from the file's own sources, each step
   logged with the reason.

`python -m wan_worker.provision bundle` builds the bundle (`wan_worker.provision.publish`).
"""

from __future__ import annotations

from dataclasses import replace

from wan_worker.provision.hfcache import repo_dir, why_not_cached
from wan_worker.provision.manifest import Manifest, ModelSpec, SourceSpec
from wan_worker.settings.provisioning import ProvisionSettings


def bundle_source(settings: ProvisionSettings, model: ModelSpec) -> SourceSpec:
    """The model's file in the bundle repository."""
    return SourceSpec(
        type="hf",
        repo=settings.bundle_repo,
        path=model.relpath,
        revision=settings.bundle_revision,
    )


def with_bundle(manifest: Manifest, settings: ProvisionSettings) -> Manifest:
    """The manifest with the bundle put first among every model's sources (unchanged when no
    bundle is configured)."""
    if not settings.bundle_repo:
        return manifest
    models = []
    for model in manifest.models:
        first = bundle_source(settings, model)
        rest = tuple(s for s in model.sources if s != first)
        models.append(replace(model, sources=(first, *rest)))
    return Manifest(models=tuple(models), path=manifest.path)


def is_bundle_source(settings: ProvisionSettings, spec: SourceSpec) -> bool:
    return bool(settings.bundle_repo) and spec.type == "hf" and spec.repo == settings.bundle_repo


def describe(settings: ProvisionSettings) -> str | None:
    """One line for the log about the bundle and RunPod's cache of it; None without a bundle."""
    if not settings.bundle_repo:
        return None
    wanted = settings.bundle_revision or "main"
    name = f"models bundle {settings.bundle_repo}@{wanted}"
    folder = repo_dir(settings.hf_cache_dir, settings.bundle_repo)
    if folder.is_dir():
        return f"{name}: in RunPod's model cache at {folder}; its files are used in place"
    return (
        f"{name}: not in RunPod's model cache ({folder} does not exist; set the endpoint's "
        f"Model field to {settings.bundle_repo} to have RunPod cache it); each file comes "
        "from the bundle on the Hub, else from its own sources"
    )


def missing_note(settings: ProvisionSettings, spec: SourceSpec) -> str | None:
    """Why a bundle file is not taken from the cache, when the bundle itself is cached (when it
    is not, `describe` already said so once)."""
    if not is_bundle_source(settings, spec):
        return None
    if not repo_dir(settings.hf_cache_dir, spec.repo).is_dir():
        return None
    return why_not_cached(settings.hf_cache_dir, spec)
