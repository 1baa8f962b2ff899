"""The Dockerfile read as instructions, for the tests that check it and run its commands."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parent.parent / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    stage: str
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped, tagged by stage."""
    instructions: list[Instruction] = []
    stage = ""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage = args.split()[-1] if " AS " in args.upper() else args
        instructions.append(Instruction(stage, keyword, " ".join(args.split())))
    return instructions


def run_flags(run: Instruction) -> list[str]:
    """The flags of a RUN (--mount=...) before its shell command."""
    return re.match(r"((?:--\S+\s+)*)", run.args).group(1).split()


def commands(run: Instruction) -> list[list[str]]:
    """The shell commands of a RUN, split on && and tokenised."""
    body = re.sub(r"^(--\S+\s+)+", "", run.args)
    return [shlex.split(part) for part in body.split("&&")]


def env(instructions: list[Instruction], stage: str) -> dict[str, str]:
    """The ENV values a stage sets (KEY=VALUE forms; later ones win)."""
    values: dict[str, str] = {}
    for instruction in instructions:
        if instruction.stage == stage and instruction.keyword == "ENV":
            for token in shlex.split(instruction.args):
                key, sep, value = token.partition("=")
                if sep:
                    values[key] = value
    return values
