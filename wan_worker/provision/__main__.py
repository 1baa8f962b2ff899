"""Command line: `python -m wan_worker.provision [--print-root] [--pin-manifest]`, and
`python -m wan_worker.provision bundle --repo owner/name [--private] [--revision BRANCH]
[--models-root DIR] [--xet]`.

Exit status: 0 all models ready; 2 bad configuration or manifest; 3 a model could not be had
(or another worker held it past the wait bound); 4 not enough disk space; 5 (bundle) the
upload to the Hub failed (each error's `exit_status`, `wan_worker.errors`). Messages go to
stderr, prefixed `[provision]` or `[bundle]`, secrets redacted; a variable this version no
longer reads is named there too, if it is set.

`--pin-manifest`, after a run, writes into the manifest the sizes, and the sha256 sums checked
against a published value, that the verified markers recorded for entries that had none, so
the next boot verifies against pinned facts.

`bundle` makes every model present and verified under the models root (`--models-root`, else
the usual one), uploads them to one Hugging Face repository as `<folder>/<filename>` in one
commit, and prints what to put into the endpoint (`wan_worker.provision.publish`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import stat
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from wan_worker import logs
from wan_worker.errors import ConfigError, ProvisionError, PublishError, redact
from wan_worker.provision import verify
from wan_worker.provision.manifest import load_manifest
from wan_worker.provision.provisioner import Provisioner
from wan_worker.settings.env import removed_still_set
from wan_worker.settings.provisioning import ProvisionSettings


def _log(text: str) -> None:
    print(redact(text), file=sys.stderr, flush=True)


def replace_file(path: Path, text: str) -> None:
    """Replace `path` with `text` at once, its mode kept: written to a temporary name of this
    writer's own in the same folder, then renamed over it. A fixed temporary name let two runs
    at once rename each other's file (or a half-written one) away."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def pin_manifest(settings: ProvisionSettings) -> int:
    """Fill missing sizes and checked sha256 sums in the manifest from the verified markers."""
    manifest = load_manifest(settings.manifest_path)  # validates it first
    raw = json.loads(settings.manifest_path.read_text(encoding="utf-8"))
    pinned = 0
    for model, entry in zip(manifest.models, raw["models"], strict=True):
        marker = verify.read_marker(settings.models_root, model.relpath)
        if marker is None:
            if entry.get("size") is None or entry.get("sha256") is None:
                _log(f"[provision] {model.relpath}: no verified copy here; nothing to pin")
            continue
        if entry.get("size") is None:
            entry["size"] = marker.size
            pinned += 1
            _log(f"[provision] {model.relpath}: pinned size {marker.size}")
        if entry.get("sha256") is None:
            if marker.sha256 and marker.sha256_checked:
                entry["sha256"] = marker.sha256
                pinned += 1
                _log(f"[provision] {model.relpath}: pinned sha256 {marker.sha256}")
            elif marker.sha256:
                _log(
                    f"[provision] {model.relpath}: sha256 {marker.sha256} was computed but not "
                    "checked against a published value; not pinned"
                )
    replace_file(settings.manifest_path, json.dumps(raw, indent=2, ensure_ascii=False) + "\n")
    _log(f"[provision] pinned {pinned} value(s) in {settings.manifest_path}")
    return 0


def _bundle(settings: ProvisionSettings, args: argparse.Namespace) -> int:
    from wan_worker.provision.publish import build_bundle, report

    if args.models_root is not None:
        settings = replace(
            settings, models_root=args.models_root, models_root_reason="--models-root"
        )
    result = build_bundle(
        settings,
        repo=args.repo,
        private=args.private,
        branch=args.revision,
        use_xet=args.xet,
        log=_log,
    )
    print(report(result), flush=True)
    return 0


def main(
    argv: list[str] | None = None,
    read_settings: Callable[[], ProvisionSettings] = ProvisionSettings.from_env,
) -> int:
    """The command; `read_settings` gives its settings (tests give their own mounts and values)."""
    parser = argparse.ArgumentParser(
        prog="python -m wan_worker.provision",
        description="Make every model in the manifest present and verified.",
    )
    parser.add_argument(
        "--print-root",
        action="store_true",
        help="print the models root this environment resolves to, and exit",
    )
    parser.add_argument(
        "--pin-manifest",
        action="store_true",
        help="after the run, write the verified sizes and checked sha256 sums into the manifest",
    )
    commands = parser.add_subparsers(dest="command", metavar="{bundle}")
    bundle = commands.add_parser(
        "bundle",
        help="build the models bundle for RunPod's cached models (docs/operations.md)",
        description="Verify every manifest file, upload them to one Hugging Face repository "
        "as <folder>/<filename> in one commit, and print the endpoint's settings.",
    )
    bundle.add_argument("--repo", required=True, help="the bundle repository, owner/name")
    bundle.add_argument(
        "--private",
        action="store_true",
        help="create the repository private (needs HF_TOKEN on the endpoint too)",
    )
    bundle.add_argument(
        "--revision", default="main", help="the branch to commit to (default: main)"
    )
    bundle.add_argument(
        "--models-root",
        type=Path,
        help="where the files are verified or downloaded first (default: the models root "
        "this environment resolves to)",
    )
    bundle.add_argument(
        "--xet", action="store_true", help="upload over the Xet protocol instead of LFS"
    )
    args = parser.parse_args(argv)
    logs.configure(logging.WARNING)
    for warning in removed_still_set():
        _log(f"[provision] {warning}")
    try:
        settings = read_settings()
        if args.command == "bundle":
            return _bundle(settings, args)
        if args.print_root:
            print(settings.models_root)
            return 0
        Provisioner(settings, log=_log).run()
        if args.pin_manifest:
            return pin_manifest(settings)
    except ConfigError as exc:
        _log(f"[provision] configuration error: {exc.message}")
        return exc.exit_status
    except PublishError as exc:
        _log(f"[bundle] FAILED: {exc.message}")
        return exc.exit_status
    except ProvisionError as exc:  # DiskSpaceError and ClaimWaitTimeout included
        _log(f"[provision] FAILED: {exc.message}")
        return exc.exit_status
    return 0


if __name__ == "__main__":
    sys.exit(main())
