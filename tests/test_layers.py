"""The layering written down as import-linter contracts (pyproject.toml) holds.

The contracts say which part of rap may import which: the commands and the
service on top, the errors at the bottom, no arrow running up, no two modules
of a package importing each other, backends of one kind independent, the core
free of torch and the web stack, and no test support inside the package. A
change that breaks one fails here with import-linter's account of the import
that broke it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_import_contracts_hold() -> None:
    pytest.importorskip("importlinter", reason="import-linter comes with the dev extra")
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert lint, "lint-imports is not on PATH; install the dev extra"
    # this checkout's rap, whatever is installed; --no-cache writes nothing into the checkout
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([lint, "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    report = done.stdout + done.stderr
    assert done.returncode == 0, report[report.find("Broken contracts") :][-4000:] or report[-4000:]
