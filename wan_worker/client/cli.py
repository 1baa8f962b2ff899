"""`wan-i2v` / `python -m wan_worker.client`: one image and a prompt to an MP4 on disk.

Submits the job with `/run`, follows it with `/status` behind a progress bar, saves the video
and prints its facts; or prints the error and exits with a code that says what happened (see
`wan_worker.client.errors`, and README "Client").
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from wan_worker.client.api import FINAL_STATES, JobApi, LocalApi, make_session, runpod_from_env
from wan_worker.client.destination import Destination, destination
from wan_worker.client.errors import (
    EXIT_MEANINGS,
    ApiError,
    ApiHttpError,
    ApiNoAnswerInTime,
    ApiUnreachable,
    ClientError,
    ExitCode,
    ResultError,
    UsageError,
)
from wan_worker.client.interrupt import InterruptLatch
from wan_worker.client.outcome import failure, save_video, summary
from wan_worker.client.progress_bar import JobBar

# RunPod refuses /run requests over 10 MB (its operation reference).
RUN_PAYLOAD_LIMIT = 10_000_000
DEFAULT_TIMEOUT_S = 1800.0
DEFAULT_POLL_S = 2.0


EXIT_CODES_HELP = "\n".join(f"  {code.value:>3}  {text}" for code, text in EXIT_MEANINGS.items())


def seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wan-i2v",
        description="Make an MP4 from one image and a prompt on a Wan2.2 image-to-video "
        "endpoint: a RunPod endpoint (RUNPOD_ENDPOINT_ID, RUNPOD_API_KEY) or a worker's "
        "local API (--url).",
        epilog="exit codes:\n" + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "image", help="the start image: a file, or an http(s) URL the worker fetches"
    )
    parser.add_argument("prompt", help="what should happen in the video")
    parser.add_argument(
        "--negative-prompt", metavar="TEXT", help="what to avoid (default: the workflow's)"
    )
    parser.add_argument(
        "--seed", type=int, metavar="N", help="0 to 2^63-1 (default: random; printed)"
    )
    parser.add_argument("--width", type=int, metavar="PX", help="output width (default 720)")
    parser.add_argument("--height", type=int, metavar="PX", help="output height (default 1280)")
    parser.add_argument(
        "--out",
        metavar="PATH",
        help="where to save the MP4 (default: wan-<job id>.mp4 here; a folder, or a path "
        "ending in /: in it); checked, and its folder created, before the job is submitted",
    )
    parser.add_argument(
        "--timeout",
        type=seconds_arg,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help="give up after this long and cancel the job "
        f"(default {DEFAULT_TIMEOUT_S:g}; 0: no limit)",
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--endpoint", metavar="ID", help="RunPod endpoint id (default: $RUNPOD_ENDPOINT_ID)"
    )
    target.add_argument(
        "--url", help="a worker's local API instead of RunPod, e.g. http://127.0.0.1:8000"
    )
    parser.add_argument(
        "--poll-interval",
        type=seconds_arg,
        default=DEFAULT_POLL_S,
        metavar="SECONDS",
        help=f"time between /status requests to RunPod (default {DEFAULT_POLL_S:g})",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (nor, off a terminal, progress lines)",
    )
    return parser


def image_field(image: str) -> str:
    """`start_image` for the request: a URL or data URI as given, a file as base64."""
    if image.startswith(("http://", "https://", "data:")):
        return image
    path = Path(image).expanduser()
    try:
        return base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError as exc:
        raise UsageError(f"image: cannot read {image}: {exc.strerror or exc}") from exc


def job_input(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {"start_image": image_field(args.image), "prompt": args.prompt}
    for name in ("negative_prompt", "seed", "width", "height"):
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    return fields


def choose_api(args: argparse.Namespace) -> JobApi:
    if args.url:
        if not args.url.startswith(("http://", "https://")):
            raise UsageError(f"--url must start with http:// or https://, got {args.url!r}")
        return LocalApi(args.url)
    api, missing = runpod_from_env(args.endpoint)
    if api is None:
        raise UsageError(
            f"set {missing} for a RunPod endpoint, or pass --url for a worker's local API"
        )
    return api


def check_payload(api: JobApi, fields: dict[str, Any]) -> None:
    """Refuse a request RunPod would refuse for its size."""
    if api.can_cancel:
        size = len(json.dumps({"input": fields}))
        if size > RUN_PAYLOAD_LIMIT:
            raise UsageError(
                f"the request is {size:,} bytes, over RunPod's 10 MB limit for /run; "
                "pass the image as an https URL, or a smaller file"
            )


def http_hint(exc: ApiHttpError, api: JobApi) -> str:
    if exc.status in (401, 403):
        return "check RUNPOD_API_KEY"
    if exc.status == 404 and exc.what == "POST /run":
        return "check the endpoint id" if api.can_cancel else "is --url a worker's local API?"
    if exc.status == 404:
        return (
            "the job is gone: RunPod keeps /run results 30 minutes, and drops jobs past their TTL"
        )
    if exc.status == 405:
        return "is --url a worker's local API (rp_handler.py --rp_serve_api)?"
    if exc.status == 429:
        return "rate limited: retry later"
    if exc.status >= 500:
        return "a server error: retry; check the endpoint's logs if it repeats"
    return ""


class JobRun:
    """One job from submission to its end, printing as it goes."""

    def __init__(
        self,
        api: JobApi,
        args: argparse.Namespace,
        dest: Destination,
        out: TextIO,
        err: TextIO,
    ) -> None:
        self.api = api
        self.args = args
        self.dest = dest
        self.out = out
        self.err = err
        self.started = time.monotonic()
        self.deadline = self.started + args.timeout if args.timeout > 0 else math.inf
        self.job_id: str | None = None
        self.latch = InterruptLatch()

    def say(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, fields: dict[str, Any]) -> ExitCode:
        with self.latch:
            return self._guarded(fields)

    def _guarded(self, fields: dict[str, Any]) -> ExitCode:
        try:
            return self._run(fields)
        except ApiHttpError as exc:
            hint = http_hint(exc, self.api)
            self.say(f"error: {exc.what} to {self.api.name}: HTTP {exc.status}: {exc.detail}")
            if hint:
                self.say(f"  {hint}")
            return exc.exit_code
        except ApiUnreachable as exc:
            self.say(f"error: {exc.what} to {self.api.name}: no answer: {exc.reason}")
            if self.job_id:
                self.say(f"  job {self.job_id} may still be running")
            return exc.exit_code
        except ClientError as exc:
            self.say(f"error: {exc}")
            return exc.exit_code
        except KeyboardInterrupt:
            self.say("interrupted")
            self.stop_job()
            return ExitCode.INTERRUPTED

    def _run(self, fields: dict[str, Any]) -> ExitCode:
        answer = self.api.submit(fields)
        job_id = answer.get("id")
        if not isinstance(job_id, str) or not job_id:
            raise ApiHttpError("POST /run", 200, "no job id in " + json.dumps(answer)[:300])
        self.job_id = job_id
        self.say(f"job {job_id} submitted to {self.api.name}")
        final = self.follow(job_id, answer)
        if final is None:
            return self.give_up()
        return self.finish(job_id, final)

    def follow(self, job_id: str, answer: dict[str, Any]) -> dict[str, Any] | None:
        """Poll until the job ends (its last answer) or the deadline passes (None)."""
        bar = JobBar(self.err, enabled=not self.args.no_progress)
        status = str(answer.get("status", ""))
        try:
            while status not in FINAL_STATES:
                if self.api.shows_progress:
                    bar.state(status, answer.get("output"))
                else:
                    bar.note("running (the local API shows no progress)")
                if self.remaining() <= 0:
                    return None
                try:
                    answer = self.api.status(job_id, wait_s=self.remaining())
                except ApiNoAnswerInTime:
                    if self.remaining() <= 0:
                        return None
                    raise
                self.latch.check()
                status = str(answer.get("status", ""))
                if status not in FINAL_STATES:
                    time.sleep(max(0.0, min(self.args.poll_interval, self.remaining())))
                    self.latch.check()
            return answer
        finally:
            bar.close(done=status == "COMPLETED")

    def stop_job(self) -> None:
        """Cancel the job where the API allows it, and say what happened to it."""
        if self.job_id is None:
            return
        if not self.api.can_cancel:
            self.say(
                f"  job {self.job_id} runs on in the worker until it ends "
                "(the local API cannot cancel)"
            )
            return
        try:
            answer = self.api.cancel(self.job_id)
        except ApiError as exc:
            self.say(f"  cancelling job {self.job_id} failed: {exc}")
            return
        self.say(f"  cancelled job {self.job_id} (status {answer.get('status', '?')})")

    def give_up(self) -> ExitCode:
        waited = time.monotonic() - self.started
        self.say(f"error: no result after {waited:.0f} s (--timeout {self.args.timeout:g})")
        self.stop_job()
        return ExitCode.GAVE_UP

    def finish(self, job_id: str, answer: dict[str, Any]) -> ExitCode:
        status = answer["status"]
        if status != "COMPLETED":
            for line in failure(answer).lines(job_id, status):
                self.say(line)
            if status == "TIMED_OUT":
                self.say(
                    "  RunPod ended it: the job ran past the endpoint's execution timeout "
                    "(600 s by default) or waited in the queue past its TTL"
                )
                return ExitCode.TIMED_OUT
            return ExitCode.CANCELLED if status == "CANCELLED" else ExitCode.FAILED
        output = answer.get("output")
        if not isinstance(output, dict):
            self.say(f"error: job {job_id} completed without a result object: {str(output)[:300]}")
            return ExitCode.NOT_SAVED
        out = self.dest.path(job_id)
        try:
            size, source = save_video(output, out, make_session())
        except ResultError as exc:
            self.say(f"error: job {job_id} completed, but {exc}")
            return exc.exit_code
        for line in summary(output, answer, out, size, source):
            print(line, file=self.out, flush=True)
        return ExitCode.OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        api = choose_api(args)
        fields = job_input(args)
        check_payload(api, fields)
        dest = destination(args.out)  # last: it may create a folder
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return int(JobRun(api, args, dest, sys.stdout, sys.stderr).run(fields))


if __name__ == "__main__":
    sys.exit(main())
