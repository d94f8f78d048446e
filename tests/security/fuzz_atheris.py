"""Coverage-guided fuzzing of veilcam's parsers with atheris (libFuzzer). Run by hand, not in CI.

    .venv/bin/pip install atheris            # wheels for CPython 3.11 on Linux x86-64
    mkdir -p /tmp/fuzz-frame
    .venv/bin/python tests/security/fuzz_atheris.py frame /tmp/fuzz-frame \\
        tests/security/corpus/frame -max_total_time=600 -timeout=5 -rss_limit_mb=2048

The first argument names the target (``fuzzlib.TARGETS``: frame, envelope, gap,
envelope_body, ack, record, grant, segment); the rest go to libFuzzer. Give a scratch folder
first: libFuzzer writes the inputs it finds interesting into the first corpus folder, and the
saved corpus should only grow by hand. Seeds for envelope_body are part 1 of the envelope
entries: ``python -c`` them out, or start it from an empty folder.

The targets are the same functions the CI fuzz tests run (``tests/security/fuzzlib.py``): a
parser may refuse input only with FormatError, VerificationError or ArchiveError; any other
exception, a failed property (assert), a timeout or an out-of-memory is a finding. libFuzzer
saves the input as ``crash-*``/``timeout-*``/``oom-*``; add it to the corpus as ``bad-...``
once fixed, so the CI replay keeps it fixed.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    sys.path.insert(0, str(ROOT))
    import atheris

    with atheris.instrument_imports(include=["common", "store_node", "tests.security"]):
        from tests.security import fuzzlib
    if len(sys.argv) < 2 or sys.argv[1] not in fuzzlib.TARGETS:
        sys.exit(
            f"usage: {sys.argv[0]} TARGET [libFuzzer options] [corpus folders]\n"
            f"targets: {', '.join(sorted(fuzzlib.TARGETS))}"
        )
    target = fuzzlib.TARGETS[sys.argv.pop(1)]

    def one_input(data: bytes) -> None:
        target(data)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
