""".ci/run on a bare Debian or Ubuntu machine, without the machine: the script runs in a copy of
the project with stand-ins for apt-get, apt-cache, sudo, id and the interpreter on PATH. Each
writes what it was asked to a log; apt-get's install also asks policy-rc.d, as Debian's
maintainer scripts do before starting nginx, and logs the answer. The copy's scripts/test.sh is
a stand-in too. policy-rc.d lives in the test's folder (POLICY_RC_D), never in /usr/sbin.
The tests that run the script are integration tests (bash and its commands).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def stub(folder: Path, name: str, body: str, *, logged: bool = True) -> None:
    path = folder / name
    log = f'echo "{name} $*" >> "$CALLS"\n' if logged else ""
    path.write_text(f"#!/bin/bash\n{log}{body}\n")
    path.chmod(0o755)


@dataclass
class Machine:
    """The copy of the project, its stand-ins, and what they logged."""

    project: Path
    bin: Path
    policy: Path
    calls: Path

    def run(self, uid: int = 0, **env: str) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG")}
        return subprocess.run(
            ["/bin/bash", ".ci/run"],
            cwd=self.project,
            env={
                **clean,
                "PATH": f"{self.bin}:{SYSTEM_PATH}",
                "CALLS": str(self.calls),
                "POLICY_RC_D": str(self.policy),
                "FAKE_UID": str(uid),
                **env,
            },
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    def log(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    project = tmp_path / "project"
    (project / ".ci").mkdir(parents=True)
    (project / "scripts").mkdir()
    shutil.copy(ROOT / ".ci" / "run", project / ".ci" / "run")
    (project / "requirements-dev.txt").write_text("pytest\n")
    (project / "scripts" / "test.sh").write_text(
        'echo "test.sh $* (python: $(command -v python))" >> "$CALLS"\n'
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    policy = tmp_path / "sbin" / "policy-rc.d"
    policy.parent.mkdir()
    stub(bin_dir, "id", 'echo "${FAKE_UID}"', logged=False)
    # sudo runs the command with the environment reset, as sudo's default env_reset does.
    stub(bin_dir, "sudo", 'exec env -i PATH="$PATH" CALLS="$CALLS" POLICY_RC_D="$POLICY_RC_D" "$@"')
    stub(bin_dir, "apt-cache", '[ -z "$FAKE_NO_UTIL_LINUX_EXTRA" ]')
    stub(
        bin_dir,
        "apt-get",
        'if [ "$1" = install ]; then\n'
        '  echo "DEBIAN_FRONTEND=$DEBIAN_FRONTEND" >> "$CALLS"\n'
        '  "$POLICY_RC_D" nginx start\n'
        '  echo "policy-rc.d nginx start: $?" >> "$CALLS"\n'
        '  [ -z "$FAKE_INSTALL_FAILS" ] || exit 100\n'
        "fi",
    )
    interpreter = (
        'case "$1" in\n'
        '  -c) echo "${FAKE_PYTHON_VERSION:-3.11}" ;;\n'
        "  -m) mkdir -p .venv/bin\n"
        '      printf \'#!/bin/bash\\necho "venv-python $*" >> "$CALLS"\\n\' > .venv/bin/python\n'
        "      chmod 755 .venv/bin/python ;;\n"
        "esac"
    )
    stub(bin_dir, "python3", interpreter)
    stub(bin_dir, "python3.12", interpreter)
    return Machine(project, bin_dir, policy, tmp_path / "calls.log")


INSTALL_FLAGS = "install -y -qq --no-install-recommends"


@pytest.mark.integration
def test_a_bare_machine_gets_python_venv_and_the_tools_and_no_service_starts(machine: Machine):
    done = machine.run()
    assert done.returncode == 0, done.stderr
    assert machine.log() == [
        "apt-get update -qq",
        "apt-cache show util-linux-extra",
        f"apt-get {INSTALL_FLAGS} python3 python3-venv ffmpeg nginx curl git util-linux-extra",
        "DEBIAN_FRONTEND=noninteractive",
        "policy-rc.d nginx start: 101",  # refused: nginx is not started on port 80
        'python3 -c import sys; print("%d.%d" % sys.version_info[:2])',
        "python3 -m venv .venv",
        "venv-python -m pip install -q --upgrade pip",
        "venv-python -m pip install -q -r requirements-dev.txt",
        f"test.sh  (python: {machine.project}/.venv/bin/python)",
    ]
    assert not machine.policy.exists()  # services start again after the install
    assert not machine.policy.with_name("policy-rc.d.ci-run-saved").exists()


@pytest.mark.integration
def test_as_a_user_every_install_goes_through_sudo_and_a_policy_already_there_is_kept(
    machine: Machine,
):
    original = "#!/bin/sh\n# the image's own\nexit 101\n"
    machine.policy.write_text(original)
    machine.policy.chmod(0o755)
    done = machine.run(uid=1000, FAKE_NO_UTIL_LINUX_EXTRA="1")
    assert done.returncode == 0, done.stderr
    log = machine.log()
    apt = [line for line in log if line.startswith(("apt-get", "sudo apt-get", "sudo env"))]
    packages = "python3 python3-venv ffmpeg nginx curl git"
    assert apt == [
        "sudo apt-get update -qq",
        "apt-get update -qq",
        f"sudo env DEBIAN_FRONTEND=noninteractive apt-get {INSTALL_FLAGS} {packages}",
        f"apt-get {INSTALL_FLAGS} {packages}",
    ]
    # Nothing else ran as root but what handles policy-rc.d.
    assert {line.split()[1] for line in log if line.startswith("sudo")} == {
        "apt-get", "env", "test", "mv", "tee", "chmod", "rm",
    }  # fmt: skip
    # sudo resets the environment: the front end still reaches apt-get.
    assert "DEBIAN_FRONTEND=noninteractive" in log
    assert "policy-rc.d nginx start: 101" in log
    assert machine.policy.read_text() == original
    assert not machine.policy.with_name("policy-rc.d.ci-run-saved").exists()


@pytest.mark.integration
def test_an_older_python_stops_before_the_venv_and_names_the_version_needed(machine: Machine):
    done = machine.run(FAKE_PYTHON_VERSION="3.10")
    assert done.returncode == 1
    assert "python3 is Python 3.10; the tests need Python 3.11 or newer" in done.stderr
    assert "PYTHON=python3.11 bash .ci/run" in done.stderr
    assert "python3 -m venv .venv" not in machine.log()
    assert not [line for line in machine.log() if line.startswith("test.sh")]
    assert not machine.policy.exists()


@pytest.mark.integration
@pytest.mark.parametrize("version", ["3.12", "3.13", "4.0"])
def test_newer_pythons_pass_the_check(machine: Machine, version: str):
    done = machine.run(FAKE_PYTHON_VERSION=version)
    assert done.returncode == 0, done.stderr
    assert "python3 -m venv .venv" in machine.log()


@pytest.mark.integration
def test_another_interpreter_is_installed_with_its_venv_package(machine: Machine):
    done = machine.run(PYTHON="python3.12")
    assert done.returncode == 0, done.stderr
    log = machine.log()
    assert f"apt-get {INSTALL_FLAGS} python3.12 python3.12-venv ffmpeg nginx curl git" in " ".join(
        log
    )
    assert "python3.12 -m venv .venv" in log


@pytest.mark.integration
def test_a_failed_install_still_takes_its_policy_away(machine: Machine):
    done = machine.run(FAKE_INSTALL_FAILS="1")
    assert done.returncode == 100
    assert "policy-rc.d nginx start: 101" in machine.log()
    assert not machine.policy.exists()
    assert not [line for line in machine.log() if line.startswith("python3")]


@pytest.mark.integration
def test_a_failed_install_puts_back_the_policy_that_was_there(machine: Machine):
    machine.policy.write_text("#!/bin/sh\nexit 0\n")
    machine.policy.chmod(0o755)
    done = machine.run(FAKE_INSTALL_FAILS="1")
    assert done.returncode == 100
    assert "policy-rc.d nginx start: 101" in machine.log()  # ours, during the install
    assert machine.policy.read_text() == "#!/bin/sh\nexit 0\n"


def test_the_python_version_needed_is_the_same_in_the_project_ci_and_readme():
    requires = re.search(
        r'^requires-python = ">=(\d+\.\d+)"$', (ROOT / "pyproject.toml").read_text(), re.M
    )
    minimum = re.search(r"^MIN_PYTHON=(\S+)$", (ROOT / ".ci" / "run").read_text(), re.M)
    assert requires is not None and minimum is not None
    assert requires.group(1) == minimum.group(1) == "3.11"
    assert "Python 3.11 or newer" in (ROOT / "README.md").read_text()
