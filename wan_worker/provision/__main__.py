"""Command line: `python -m wan_worker.provision [--print-root] [--check]`.

Exit status: 0 all models ready; 2 bad configuration or manifest; 3 a model could not be had;
4 not enough disk space. Messages go to stderr, prefixed `[provision]`, secrets redacted.
"""

from __future__ import annotations

import argparse
import sys

from wan_worker.errors import ConfigError, redact
from wan_worker.provision.provisioner import DiskSpaceError, Provisioner, ProvisionError
from wan_worker.provision.settings import ProvisionSettings


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wan_worker.provision",
        description="Make every model in the manifest present and verified.",
    )
    parser.add_argument(
        "--print-root",
        action="store_true",
        help="print the models root this environment resolves to, and exit",
    )
    args = parser.parse_args(argv)
    try:
        settings = ProvisionSettings.from_env()
        if args.print_root:
            print(settings.models_root)
            return 0
        Provisioner(settings, log=_log).run()
    except ConfigError as exc:
        _log(redact(f"[provision] configuration error: {exc.message}"))
        return 2
    except DiskSpaceError as exc:
        _log(f"[provision] FAILED: {redact(exc.message)}")
        return 4
    except ProvisionError as exc:
        _log(f"[provision] FAILED: {redact(exc.message)}")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
