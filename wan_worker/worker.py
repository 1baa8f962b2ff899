"""The worker: what a job needs that outlives it, one per handler process.

Its settings, the fixed workflow, the ComfyUI client, the output bucket, and the `WorkerGate`
that jobs share with the boot. The handler (`wan_worker.handler`) runs jobs on it; the boot
(`wan_worker.boot`) makes it once the models are verified, and its warm-up runs on it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from wan_worker.comfy.client import ComfyClient
from wan_worker.comfy.process import ComfyProcess
from wan_worker.delivery import make_store
from wan_worker.job_files import JobFiles
from wan_worker.job_progress import Sender, runpod_sender
from wan_worker.settings.worker import WorkerSettings
from wan_worker.storage import VideoStore
from wan_worker.worker_gate import WorkerGate
from wan_worker.workflow import WorkflowTemplate, load_template


@dataclass
class Worker:
    """What a job needs that outlives it: settings, the workflow, ComfyUI, the bucket."""

    settings: WorkerSettings
    template: WorkflowTemplate
    client: ComfyClient
    store: VideoStore | None = None
    send_progress: Sender | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Files of failed jobs whose prompts ComfyUI may still be running (a time-out it did not
    #: act on at once): removed again after each later job, until ComfyUI has finished them.
    abandoned: list[JobFiles] = field(default_factory=list)
    #: Why SageAttention cannot load on this worker, once it has failed to (not installed, no
    #: kernel for this GPU); later jobs then use PyTorch attention without trying it.
    sage_unusable: str | None = None
    #: The models' state while the worker boots, the jobs in hand, the warm-up (open when
    #: there is no boot in this process).
    gate: WorkerGate = field(default_factory=WorkerGate)

    @classmethod
    def from_settings(cls, settings: WorkerSettings, gate: WorkerGate | None = None) -> Worker:
        process = ComfyProcess(settings.comfyui_pid_file, settings.comfyui_log)
        return cls(
            settings=settings,
            template=load_template(settings.workflow_path),
            client=ComfyClient(settings.comfyui_url, process),
            store=make_store(settings),
            send_progress=runpod_sender(),
            gate=gate or WorkerGate(),
        )
