"""The model manifest: it covers the workflow, and bad entries are refused with precise errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wan_worker.errors import ConfigError
from wan_worker.provision.manifest import REVISION_RE, SHA256_RE, load_manifest
from wan_worker.workflow import workflow_model_files

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "workflows" / "models.json"
WORKFLOW = ROOT / "workflows" / "wan_flf_i2v_api.json"


def test_manifest_covers_every_model_file_the_workflow_references():
    workflow = json.loads(WORKFLOW.read_text())
    referenced = workflow_model_files(workflow)
    listed = {(m.folder, m.filename) for m in load_manifest(MANIFEST).models}
    assert len(referenced) == 6  # two experts, LoRA, text encoder, VAE, RIFE
    assert referenced <= listed, f"missing from models.json: {sorted(referenced - listed)}"


def test_manifest_facts_are_well_formed_and_every_model_has_a_public_source():
    for model in load_manifest(MANIFEST).models:
        assert model.sha256 is None or SHA256_RE.match(model.sha256)
        kinds = [s.type for s in model.sources]
        assert kinds[0] == "r2", model.relpath  # the deployment's own bucket first
        assert {"hf", "url"} & set(kinds), f"{model.relpath} has no public source"
        for source in model.sources:
            assert source.revision is None or REVISION_RE.match(source.revision)
        assert model.notes, f"{model.relpath}: say where its facts come from"


def test_vae_is_pinned_by_size_sha256_and_revision():
    vae = next(m for m in load_manifest(MANIFEST).models if m.folder == "vae")
    assert vae.size == 253_815_318
    assert vae.sha256 == "2fc39d31359a4b0a64f55876d8ff7fa8d780956ae2cb13463b0223e15148976b"
    assert vae.sources[1].revision == "06e001fc51048fb03433a6fb25334de7836704a5"


def test_rife_is_linked_where_the_frame_interpolation_node_reads_it():
    rife = next(m for m in load_manifest(MANIFEST).models if m.filename == "rife47.pth")
    assert rife.link_into == ("{comfyui_dir}/custom_nodes/ComfyUI-Frame-Interpolation/ckpts/rife",)


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (
            {
                "folder": "vae",
                "filename": "../x",
                "sources": [{"type": "url", "url": "https://a/b"}],
            },
            "`filename` must be a plain file or folder name",
        ),
        (
            {
                "folder": "vae",
                "filename": "x",
                "size": -1,
                "sources": [{"type": "url", "url": "https://a/b"}],
            },
            "`size` must be a positive byte count or null",
        ),
        (
            {
                "folder": "vae",
                "filename": "x",
                "sha256": "ABC",
                "sources": [{"type": "url", "url": "https://a/b"}],
            },
            "`sha256` must be 64 lowercase hex digits or null",
        ),
        ({"folder": "vae", "filename": "x", "sources": []}, "`sources` must be a non-empty list"),
        (
            {
                "folder": "vae",
                "filename": "x",
                "sources": [{"type": "hf", "repo": "a/b", "path": "c", "revision": "main"}],
            },
            "`revision` must be a 40-hex commit or null",
        ),
        (
            {"folder": "vae", "filename": "x", "sources": [{"type": "ftp"}]},
            "type must be one of r2, hf, url",
        ),
    ],
)
def test_bad_entries_name_the_entry_and_field(tmp_path, entry, problem):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"models": [entry]}))
    with pytest.raises(ConfigError) as failed:
        load_manifest(path)
    assert "models[0]" in failed.value.message and problem in failed.value.message


def test_missing_manifest_names_the_variable(tmp_path):
    with pytest.raises(ConfigError) as failed:
        load_manifest(tmp_path / "nope.json")
    assert "MODELS_MANIFEST" in failed.value.message
