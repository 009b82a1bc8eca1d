"""The bundled PostgreSQL + pgvector runs on any x86-64 CPU with AVX2: no AVX-512 outside code chosen by cpuid.

The check reads the binaries, not the CPU, so it fails on every machine, with
AVX-512 or without, when a new wheel brings code built for AVX-512
(tests/x86_dispatch.py says how). Its own tests feed it hand-assembled code.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from x86_dispatch import Function, Functions, check_tree, is_avx512, is_elf, read_code, unchosen
from rap.store.postgres_server import PG_MAJOR, SERVER_PACKAGE

VMOVUPS_ZMM = bytes.fromhex("62f17c481000")  # vmovups zmm0, [rax]: EVEX
RET, CPUID = b"\xc3", b"\x0f\xa2"


@pytest.mark.slow
def test_bundled_postgres_has_no_avx512_outside_cpuid_dispatch():
    """Every ELF file of the server's wheel: PostgreSQL 16 and 18, their libraries, pgvector's vector.so."""
    package = Path(importlib.util.find_spec(SERVER_PACKAGE).origin).parent
    binaries = [p for p in package.rglob("*") if p.is_file() and not p.is_symlink() and is_elf(p)]
    assert any(p.name == "vector.so" for p in binaries) and any(p.name == "postgres" for p in binaries)
    assert (package / "pginstall18" / "bin" / "postgres").exists() and PG_MAJOR == 18  # the release rap runs is checked
    assert check_tree(package) == {}


def _check(*functions: tuple[str, bytes], data: tuple[int, ...] = ()) -> dict[str, str]:
    """Lay ``functions`` out from 0x1000, 0x100 bytes apart, disassemble and check them."""
    table = Functions(Function(0x1000 + 0x100 * i, 0x1000 + 0x100 * i + len(code), name) for i, (name, code) in enumerate(functions))
    text = b"".join(code.ljust(0x100, b"\xcc") for _, code in functions)
    return unchosen(read_code([(0x1000, text)], table), table, np.array(data, np.int64), set())


def _call(source: int, target: int) -> bytes:
    return b"\xe8" + (target - source - 5).to_bytes(4, "little", signed=True)


def _lea(source: int, target: int) -> bytes:
    return b"\x48\x8d\x05" + (target - source - 7).to_bytes(4, "little", signed=True)


def test_the_check_knows_avx512_instructions():
    assert is_avx512(VMOVUPS_ZMM, 0, 6, "vmovups")
    assert is_avx512(b"\x67" + VMOVUPS_ZMM, 0, 7, "vmovups")  # behind a legacy prefix
    assert is_avx512(bytes.fromhex("c5f890c1"), 0, 4, "kmovw")  # opmask registers are AVX-512 too
    assert not is_avx512(bytes.fromhex("c5fd6f00"), 0, 4, "vmovdqa")  # AVX2 (VEX)


def test_avx512_called_directly_fails():
    avx = VMOVUPS_ZMM + RET
    assert "called directly" in _check(("avx", avx), ("caller", _call(0x1100, 0x1000) + RET))["avx"]


def test_avx512_chosen_after_cpuid_passes():
    chooser = CPUID + _lea(0x1102, 0x1000) + RET
    assert _check(("avx", VMOVUPS_ZMM + RET), ("chooser", chooser)) == {}
    # ... and so does one chosen by a function that calls the cpuid check, and its helper called from it
    avx_with_helper = VMOVUPS_ZMM + _call(0x1006, 0x1300) + RET
    chooser = _call(0x1100, 0x1200) + _lea(0x1105, 0x1000) + RET
    assert _check(("avx", avx_with_helper), ("chooser", chooser), ("probe", CPUID + RET), ("helper", VMOVUPS_ZMM + RET)) == {}


def test_avx512_taken_without_cpuid_or_kept_in_data_fails():
    assert "never execute cpuid" in _check(("avx", VMOVUPS_ZMM + RET), ("taker", _lea(0x1100, 0x1000) + RET))["avx"]
    assert "stored in data" in _check(("avx", VMOVUPS_ZMM + RET), data=(0x1000,))["avx"]
