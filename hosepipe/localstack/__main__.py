"""``python -m hosepipe.localstack up|status``: the stack without the full CLI.

``hosepipe up`` and ``hosepipe status`` are the user-facing commands; this entry point
exists for tests and for running the stack with a chosen subset of components
(``--component ingest --component api``, or ``--no-components`` for the servers only).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hosepipe.localstack")
    parser.add_argument("command", choices=["up", "status"])
    parser.add_argument("--config", "-c", type=Path, default=None, help="pipeline YAML")
    parser.add_argument("--demo", action="store_true", help="also run the demo generator")
    parser.add_argument(
        "--component", action="append", default=None, help="run only these components"
    )
    parser.add_argument("--no-components", action="store_true", help="servers and topics only")
    args = parser.parse_args(argv)

    from hosepipe.localstack.supervisor import COMPONENTS, StackError, print_status, run_stack
    from hosepipe.runtime import StartupError, load_runtime, load_settings

    try:
        if args.command == "status":
            return print_status(load_settings())
        runtime = load_runtime("up", args.config)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    components = list(COMPONENTS)
    if args.no_components:
        components = []
    elif args.component:
        unknown = set(args.component) - {c.name for c in COMPONENTS}
        if unknown:
            print(f"error: unknown component(s) {sorted(unknown)}", file=sys.stderr)
            return 2
        components = [c for c in COMPONENTS if c.name in args.component]
    try:
        return run_stack(
            runtime.settings, runtime.settings.config_file, demo=args.demo, components=components
        )
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
