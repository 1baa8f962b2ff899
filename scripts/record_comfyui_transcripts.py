"""Record what a real ComfyUI says while it runs the fixed workflow: HTTP replies + websocket.

The recordings in ``tests/data/comfyui_transcripts/`` keep the ComfyUI double faithful to the
real protocol. Re-record them whenever ComfyUI or a custom node is re-pinned:

1. Start the real ComfyUI (``main.py --cpu`` is enough) with the workflow's models in place,
   e.g. from ``scripts/make_synthetic_weights.py --size tiny``; restart it right before, so the
   first job is recorded on a fresh server.
2. ``python scripts/record_comfyui_transcripts.py --comfyui-dir DIR --models-root DIR``

Scenarios: a successful job, the same job again (all cached), /prompt rejections, a node that
fails at run time (a truncated model file, planted under ``--models-root`` for the run and
removed after), SageAttention asked for where it is not installed (``sage_attention`` =
``auto`` on a ComfyUI without the ``sageattention`` package, as on a CPU), an interrupt, the
feature-flags handshake, ComfyUI's folders (``/internal/folder_paths``) and a few idle HTTP
replies. ``--only SCENARIO`` (repeatable) records some of them and leaves the other files as
they are. The uploaded image and the job's output files are removed at the end. Local
paths are replaced by neutral ones (``/opt/ComfyUI``, ``/opt/models``, ``/opt/venv``...), and
the script refuses to write a file that still holds one.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import websocket
from PIL import Image, ImageDraw

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = REPO_ROOT / "workflows" / "wan_flf_i2v_api.json"
DEFAULT_OUT = REPO_ROOT / "tests" / "data" / "comfyui_transcripts"
BINARY_EVENTS = {
    1: "PREVIEW_IMAGE",
    2: "UNENCODED_PREVIEW_IMAGE",
    3: "TEXT",
    4: "PREVIEW_IMAGE_WITH_METADATA",
}
TERMINAL = ("execution_success", "execution_error", "execution_interrupted")
HIGH_NOISE_UNET = "908"
TEXT_EVENT = 3
PROMPTS = (
    "A person turns to the camera and smiles, natural motion.",
    "blurry, static, low quality",
)

Message = dict[str, Any]
Predicate = Callable[[Message], bool]


class Session:
    """One ComfyUI, one clock: every HTTP exchange and websocket message gets a time stamp."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.started = time.monotonic()

    def now(self) -> float:
        return round(time.monotonic() - self.started, 3)

    def http(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        reply = requests.request(method, self.url + path, timeout=900, **kwargs)
        try:
            body: Any = reply.json()
        except ValueError:
            body = reply.text
        return {
            "t": self.now(),
            "request": {"method": method, "path": path},
            "status": reply.status_code,
            "content_type": reply.headers.get("Content-Type"),
            "body": body,
        }


class Recorder:
    """A websocket client that keeps every message the server sends, in arrival order."""

    def __init__(self, session: Session, client_id: str, first: Message | None = None) -> None:
        self.session = session
        self.messages: list[Message] = []
        self.probes: list[dict[str, Any]] = []
        self.prompt_id: str | None = None
        self.closing = False
        self._cond = threading.Condition()
        ws_url = session.url.replace("http", "ws", 1) + f"/ws?clientId={client_id}"
        self._ws = websocket.create_connection(ws_url, timeout=900)
        if first is not None:
            self._ws.send(json.dumps(first))
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self.closing:
            try:
                opcode, data = self._ws.recv_data()
            except (websocket.WebSocketException, OSError):
                return
            if opcode == websocket.ABNF.OPCODE_CLOSE or self.closing:
                return
            entry = self._entry(opcode, data)
            with self._cond:
                self.messages.append(entry)
                self._cond.notify_all()
            self._probe_history(entry)

    def _entry(self, opcode: int, data: bytes) -> Message:
        if opcode == websocket.ABNF.OPCODE_TEXT:
            return {"t": self.session.now(), "kind": "text", "message": json.loads(data)}
        event = struct.unpack(">I", data[:4])[0] if len(data) >= 4 else None
        entry: Message = {
            "t": self.session.now(),
            "kind": "binary",
            "event_type": event,
            "event_name": BINARY_EVENTS.get(event or 0, "unknown"),
            "bytes": len(data),
        }
        if event == TEXT_EVENT:
            (length,) = struct.unpack(">I", data[4:8])
            entry["node_id"] = data[8 : 8 + length].decode()
            entry["text"] = data[8 + length :].decode(errors="replace")
        return entry

    def _probe_history(self, entry: Message) -> None:
        """On the terminal execution_* message, ask /history at once: is it written yet?"""
        kind = entry.get("message", {}).get("type")
        if kind in TERMINAL and self.prompt_id is not None:
            reply = self.session.http("GET", f"/history/{self.prompt_id}")
            self.probes.append({"after_ws_message": kind, **reply})

    def wait_for(self, predicate: Predicate, timeout: float = 900) -> Message:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for message in self.messages:
                    if predicate(message):
                        return message
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("ComfyUI did not send the expected message")
                self._cond.wait(left)

    def close(self) -> list[Message]:
        self.closing = True
        self._ws.close()
        self._thread.join(timeout=5)
        return self.messages


def ws_type(kind: str, prompt_id: str | None = None, **data: Any) -> Predicate:
    def predicate(entry: Message) -> bool:
        message = entry.get("message", {})
        payload = message.get("data", {})
        if message.get("type") != kind:
            return False
        if prompt_id is not None and payload.get("prompt_id") != prompt_id:
            return False
        return all(payload.get(key) == value for key, value in data.items())

    return predicate


def start_image_png() -> bytes:
    image = Image.new("RGB", (256, 256), (40, 90, 160))
    draw = ImageDraw.Draw(image)
    draw.ellipse((64, 48, 192, 208), fill=(230, 190, 150))
    draw.rectangle((0, 200, 256, 256), fill=(30, 120, 40))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def overrides(image: str, seed: int, size: int, frames: int) -> dict[str, Any]:
    return {
        "260.image": image,
        "246.value": PROMPTS[0],
        "247.value": PROMPTS[1],
        "834.value": seed,
        "500:1.width": size,
        "500:1.height": size,
        "500:22.value": frames,
        "288.sage_attention": "disabled",
        "290.sage_attention": "disabled",
    }


def workflow(changes: dict[str, Any]) -> dict[str, Any]:
    graph = json.loads(WORKFLOW.read_text())
    for key, value in changes.items():
        node, _, field = key.rpartition(".")
        graph[node]["inputs"][field] = value
    return graph


class Scenarios:
    """Runs each scenario against ComfyUI and keeps its raw record."""

    def __init__(self, session: Session, comfyui_dir: Path, models_root: Path) -> None:
        self.session = session
        self.comfyui_dir = comfyui_dir
        self.models_root = models_root
        self.records: dict[str, dict[str, Any]] = {}
        self.image = ""

    def run_prompt(
        self,
        name: str,
        graph: dict[str, Any],
        during: Callable[[Recorder, str], None] | None = None,
    ) -> dict[str, Any]:
        client_id = uuid.uuid4().hex
        recorder = Recorder(self.session, client_id)
        recorder.wait_for(ws_type("status"))
        reply = self.session.http("POST", "/prompt", json={"prompt": graph, "client_id": client_id})
        record: dict[str, Any] = {"scenario": name, "client_id": client_id, "post_prompt": reply}
        if reply["status"] == 200:
            prompt_id = reply["body"]["prompt_id"]
            recorder.prompt_id = prompt_id
            if during is not None:
                during(recorder, prompt_id)
            recorder.wait_for(ws_type("executing", prompt_id, node=None))
            record["wall_seconds"] = round(self.session.now() - reply["t"], 2)
            time.sleep(1.5)  # a recorder, not a test: keep what trails the end marker
            record["history_probe_on_terminal_message"] = recorder.probes
            record["get_history_prompt_id"] = self.session.http("GET", f"/history/{prompt_id}")
            record["get_queue_after"] = self.session.http("GET", "/queue")
        record["ws_messages"] = recorder.close()
        self.records[name] = record
        return record

    def upload(self) -> None:
        reply = self.session.http(
            "POST",
            "/upload/image",
            files={"image": ("start_image.png", start_image_png(), "image/png")},
            data={"overwrite": "true", "type": "input"},
        )
        self.records["upload_image"] = {"scenario": "upload_image", "post_upload_image": reply}
        body = reply["body"]
        self.image = (
            f"{body['subfolder']}/{body['name']}" if body.get("subfolder") else body["name"]
        )

    def misc(self) -> None:
        http = self.session.http
        self.records["misc_http"] = {
            "scenario": "misc_http",
            "get_queue_idle": http("GET", "/queue"),
            "get_prompt_idle": http("GET", "/prompt"),
            "get_history_unknown_id": http("GET", f"/history/{uuid.UUID(int=0)}"),
            "get_system_stats": http("GET", "/system_stats"),
            "get_object_info_RIFE_VFI": http("GET", "/object_info/RIFE%20VFI"),
            "get_models_diffusion_models": http("GET", "/models/diffusion_models"),
            "post_interrupt_idle": http("POST", "/interrupt", json={}),
            "get_view_missing": http("GET", "/view?filename=nope.mp4&type=output&subfolder=x"),
        }

    def feature_flags(self) -> None:
        client_id = uuid.uuid4().hex
        first = {"type": "feature_flags", "data": {"supports_preview_metadata": True}}
        recorder = Recorder(self.session, client_id, first=first)
        recorder.wait_for(ws_type("feature_flags"), timeout=30)
        self.records["ws_feature_flags_handshake"] = {
            "scenario": "ws_feature_flags_handshake",
            "client_id": client_id,
            "client_sent_first": first,
            "ws_messages": recorder.close(),
        }

    def success(self) -> None:
        changes = overrides(self.image, seed=1, size=128, frames=9)
        record = self.run_prompt("success", workflow(changes))
        record["prompt_overrides"] = changes
        record["post_upload_image"] = self.records["upload_image"]["post_upload_image"]
        record["output_files"] = self.output_files(record)
        output = self.comfyui_dir / "output"
        record["output_dir_listing"] = sorted(
            str(path.relative_to(output)) for path in output.rglob("*") if path.is_file()
        )
        rerun = self.run_prompt("success_cached_rerun", workflow(changes))
        rerun["prompt_overrides"] = changes
        self.remove_outputs(record)

    def remove_outputs(self, record: dict[str, Any]) -> None:
        """Leave ComfyUI's output folder as it was: tests count the files jobs leave there."""
        for item in record["output_files"]:
            entry = item["gifs_entry"]
            folder = self.comfyui_dir / "output" / entry["subfolder"]
            for name in (entry["filename"], entry.get("workflow")):
                if name:
                    (folder / name).unlink(missing_ok=True)

    def remove_upload(self) -> None:
        (self.comfyui_dir / "input" / self.image).unlink(missing_ok=True)

    def output_files(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        prompt_id = record["post_prompt"]["body"]["prompt_id"]
        history = record["get_history_prompt_id"]["body"][prompt_id]
        files = []
        for entry in history["outputs"]["906"]["gifs"]:
            path = self.comfyui_dir / "output" / entry["subfolder"] / entry["filename"]
            params = {k: entry[k] for k in ("filename", "subfolder", "type")}
            view = requests.get(self.session.url + "/view", params=params, timeout=60)
            files.append(
                {
                    "gifs_entry": entry,
                    "size": path.stat().st_size,
                    "ffprobe": ffprobe(path),
                    "get_view": {
                        "status": view.status_code,
                        "content_type": view.headers.get("Content-Type"),
                        "bytes": len(view.content),
                    },
                }
            )
        return files

    def rejections(self) -> None:
        base = overrides(self.image, seed=2, size=128, frames=9)
        cases: dict[str, tuple[dict[str, Any], str]] = {
            "prompt_400_bad_enum": ({"420:8.sampler_name": "no_such_sampler"}, ""),
            "prompt_400_missing_model_file": ({"908.unet_name": "missing_model.safetensors"}, ""),
            "prompt_400_missing_input_image": ({"260.image": "not_uploaded.png"}, ""),
            "prompt_400_value_below_min": ({"500:1.width": 0}, ""),
            "prompt_400_link_to_missing_node": ({"481.positive": ["9999", 0]}, ""),
            "prompt_400_missing_required_input": ({}, "del 481.length"),
            "prompt_400_no_output_node": ({}, "del 906"),
            "prompt_400_unknown_class_type": ({}, "906.class_type = NoSuchNode"),
        }
        for name, (changes, edit) in cases.items():
            graph = workflow({**base, **changes})
            if edit == "del 481.length":
                del graph["481"]["inputs"]["length"]
            elif edit == "del 906":
                del graph["906"]
            elif edit:
                graph["906"]["class_type"] = "NoSuchNode"
            record = self.run_prompt(name, graph)
            record["change"] = edit or json.dumps(changes)
        http = self.session.http
        without_prompt = http("POST", "/prompt", json={"client_id": "x"})
        invalid_json = http(
            "POST", "/prompt", data=b"{not json", headers={"Content-Type": "application/json"}
        )
        for name, reply in (
            ("prompt_400_body_without_prompt", without_prompt),
            ("prompt_500_invalid_json", invalid_json),
        ):
            self.records[name] = {"scenario": name, "post_prompt": reply}

    def runtime_error(self) -> None:
        """A truncated model file: listed, so it passes validation; fails when loaded."""
        folder = self.models_root / "diffusion_models"
        good = next(path for path in sorted(folder.glob("*.safetensors")))
        bad = folder / "truncated_for_error_test.safetensors"
        data = good.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
        try:
            changes = {
                **overrides(self.image, seed=3, size=128, frames=9),
                f"{HIGH_NOISE_UNET}.unet_name": bad.name,
            }
            record = self.run_prompt("execution_error", workflow(changes))
            record["change"] = f"{HIGH_NOISE_UNET}.unet_name = {bad.name} (half of a valid file)"
        finally:
            bad.unlink()

    def sage_attention_missing(self) -> None:
        """sage_attention = auto where the sageattention package is not installed."""
        changes = {
            **overrides(self.image, seed=5, size=128, frames=9),
            "288.sage_attention": "auto",
            "290.sage_attention": "auto",
        }
        record = self.run_prompt("execution_error_sageattention_missing", workflow(changes))
        record["change"] = "288 and 290 sage_attention = auto; no sageattention package"
        record["prompt_overrides"] = changes

    def folders(self) -> None:
        self.records["internal_folder_paths"] = {
            "scenario": "internal_folder_paths",
            "get_internal_folder_paths": self.session.http("GET", "/internal/folder_paths"),
        }

    def interrupt(self) -> None:
        def during(recorder: Recorder, prompt_id: str) -> None:
            recorder.wait_for(ws_type("progress", prompt_id, node="420:12"))
            record_extra["post_interrupt"] = self.session.http("POST", "/interrupt", json={})
            record_extra["queue_at_interrupt"] = self.session.http("GET", "/queue")

        record_extra: dict[str, Any] = {}
        changes = overrides(self.image, seed=4, size=512, frames=33)
        record = self.run_prompt("execution_interrupted", workflow(changes), during=during)
        record.update(record_extra)
        record["change"] = "POST /interrupt after the first progress of 420:12"
        record["prompt_overrides"] = changes


def ffprobe(path: Path) -> dict[str, Any]:
    fields = "stream=codec_name,width,height,r_frame_rate,nb_read_frames,pix_fmt"
    result = subprocess.run(
        [
            *("ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames"),
            *("-show_entries", fields, "-of", "json", str(path)),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


class Redactor:
    """Replaces this machine's paths with neutral ones and refuses to keep any."""

    PYTHON_PATHS = (
        (re.compile(r"[^\s\"']*/lib/(python3\.\d+)/(?!site-packages/)"), r"/usr/local/lib/\1/"),
        (
            re.compile(r"[^\s\"']*/lib/(python3\.\d+)/site-packages/"),
            r"/opt/venv/lib/\1/site-packages/",
        ),
    )

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = sorted(pairs, key=lambda pair: -len(pair[0]))
        self.forbidden = [old for old, _ in self.pairs] + [str(Path.home()) + "/"]

    def text(self, value: str) -> str:
        for old, new in self.pairs:
            value = value.replace(old, new)
        for pattern, replacement in self.PYTHON_PATHS:
            value = pattern.sub(replacement, value)
        return value

    def tree(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.tree(item) for item in value]
        if isinstance(value, dict):
            return {self.text(key): self.tree(item) for key, item in value.items()}
        return value

    def check(self, name: str, text: str) -> None:
        for old in self.forbidden:
            if old in text:
                raise SystemExit(f"{name}: still contains the local path {old}")


def stamps(value: Any) -> list[float]:
    if isinstance(value, dict):
        own = [value["t"]] if isinstance(value.get("t"), (int, float)) else []
        return own + [t for item in value.values() for t in stamps(item)]
    if isinstance(value, list):
        return [t for item in value for t in stamps(item)]
    return []


def rebase(value: Any, zero: float) -> Any:
    """Count every "t" from the scenario's first recorded event."""
    if isinstance(value, dict):
        out = {key: rebase(item, zero) for key, item in value.items()}
        if isinstance(value.get("t"), (int, float)):
            out["t"] = round(value["t"] - zero, 3)
        return out
    if isinstance(value, list):
        return [rebase(item, zero) for item in value]
    return value


def render(record: dict[str, Any]) -> str:
    """Indented JSON, with each websocket message on one line to keep files small."""
    record = dict(record)
    messages = record.pop("ws_messages", None)
    text = json.dumps(record, indent=2, ensure_ascii=False)
    if messages is None:
        return text + "\n"
    lines = ",\n".join("    " + json.dumps(m, ensure_ascii=False) for m in messages)
    return text[:-2] + ',\n  "ws_messages": [\n' + lines + "\n  ]\n}\n"


def write(records: dict[str, dict[str, Any]], out: Path, redactor: Redactor) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, record in records.items():
        clean = redactor.tree(record)
        times = stamps(clean)
        text = render(rebase(clean, min(times)) if times else clean)
        json.loads(text)
        redactor.check(name, text)
        (out / f"{name}.json").write_text(text)
        print(f"{name}.json  {len(text.encode())} bytes", flush=True)


#: Each scenario (a Scenarios method) and the transcript files it writes.
SCENARIO_FILES: dict[str, set[str]] = {
    "upload": {"upload_image"},
    "misc": {"misc_http"},
    "feature_flags": {"ws_feature_flags_handshake"},
    "success": {"success", "success_cached_rerun"},
    "rejections": {
        "prompt_400_bad_enum", "prompt_400_missing_model_file",
        "prompt_400_missing_input_image", "prompt_400_value_below_min",
        "prompt_400_link_to_missing_node", "prompt_400_missing_required_input",
        "prompt_400_no_output_node", "prompt_400_unknown_class_type",
        "prompt_400_body_without_prompt", "prompt_500_invalid_json",
    },
    "runtime_error": {"execution_error"},
    "sage_attention_missing": {"execution_error_sageattention_missing"},
    "folders": {"internal_folder_paths"},
    "interrupt": {"execution_interrupted"},
}  # fmt: skip
SCENARIOS = tuple(SCENARIO_FILES)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8188")
    parser.add_argument("--comfyui-dir", type=Path, required=True, help="the running ComfyUI")
    parser.add_argument("--models-root", type=Path, required=True, help="its model folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--only",
        action="append",
        choices=SCENARIOS,
        help="record only this scenario (repeatable); the other files are left alone",
    )
    parser.add_argument(
        "--redact",
        action="append",
        default=[],
        metavar="PATH=PLACEHOLDER",
        help="another local path to replace (repeatable)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    comfyui_dir = args.comfyui_dir.resolve()
    models_root = args.models_root.resolve()
    pairs = [(str(comfyui_dir), "/opt/ComfyUI"), (str(models_root), "/opt/models")]
    for item in args.redact:
        old, sep, new = item.partition("=")
        if not sep or not old.startswith("/"):
            raise SystemExit(f"--redact {item!r}: expected /local/path=PLACEHOLDER")
        pairs.append((old, new))
    scenarios = Scenarios(Session(args.url), comfyui_dir, models_root)
    scenarios.upload()
    scenarios.misc()
    # Absolute paths on ComfyUI's command line (an extra_model_paths.yaml...) are local too.
    argv = scenarios.records["misc_http"]["get_system_stats"]["body"]["system"]["argv"]
    pairs += [(item, "/opt/" + Path(item).name) for item in argv if item.startswith("/")]
    chosen = args.only or list(SCENARIOS)
    before = set(scenarios.records)
    kept = {"upload_image", "misc_http"} & set().union(*(SCENARIO_FILES[n] for n in chosen))
    for name in chosen:
        if name not in ("upload", "misc"):
            getattr(scenarios, name)()
    scenarios.remove_upload()
    records = {k: v for k, v in scenarios.records.items() if k not in before or k in kept}
    write(records, args.out, Redactor(pairs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
