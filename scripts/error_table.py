"""Writes docs/errors.md: every bad input of tests/test_validation.py and its message.

    PYTHONPATH=. python scripts/error_table.py

The table comes from the tests' own cases (`CASES`), run here through the same
`message_of`, so the documented messages are the tested ones; the tests fail
when a message changes and this file was not run again.
"""

import importlib.util
import os
import pathlib
import sys
import tempfile

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

REPO = pathlib.Path(__file__).resolve().parent.parent


def main() -> None:
    spec = importlib.util.spec_from_file_location(
        "test_validation", REPO / "tests" / "test_validation.py"
    )
    cases = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = cases  # dataclasses look their module up there
    spec.loader.exec_module(cases)
    rows = []
    for case in cases.CASES:
        with tempfile.TemporaryDirectory() as tmp:
            if case.prepare:
                case.prepare(tmp)
            rows.append((case.input, cases.message_of(case, tmp)))
            print(f"{case.input}: {rows[-1][1]}")
    (REPO / "docs" / "errors.md").write_text(cases.error_table(rows))
    print(f"wrote {REPO / 'docs' / 'errors.md'} ({len(rows)} inputs)")


if __name__ == "__main__":
    main()
