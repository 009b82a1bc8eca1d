"""Find x86-64 machine code that needs AVX-512 and is not chosen at run time after asking the CPU.

A function may use AVX-512 safely when the program only reaches it after
``cpuid`` said the CPU has it: PostgreSQL's CRC-32C and popcount, and pgvector's
bit distances, keep a function pointer that a chooser sets once it has asked;
GCC's ``target_clones`` does the same through a resolver. The CPU never runs
such a function where it would fault. Code built for AVX-512 throughout
(``-march=native`` on an AVX-512 machine) has those instructions in ordinary
functions, which die with SIGILL elsewhere.

So, for every function holding an AVX-512 instruction (any EVEX-encoded
instruction: in 64-bit mode the byte 0x62 starts nothing else; or an
opmask-register instruction, ``k...``), this checks how the binary reaches it:

- no call or jump to it from outside it, unless from another such function
  that passes this check itself (its own helpers and split-off ``.cold`` parts);
- its address is taken only in functions that execute ``cpuid``, or call (one
  or two levels down) a function that does: the choosers;
- its address is in no data (a pointer table, a relocation, a PLT or GOT
  entry): what picks it there cannot be told, so it fails.

Anything it cannot account for fails: the check errs towards a false alarm, never
towards a pass. It looks for AVX-512 only: capstone 5 does not decode the VEX
form of AVX-VNNI, another extension beyond AVX2. Not a test module: tests/test_postgres_portable.py uses it (and
checks the check on hand-assembled code).
"""

from __future__ import annotations

import bisect
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import capstone
import numpy as np
from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection

LEGACY_PREFIXES = frozenset(b"\x26\x2e\x36\x3e\x64\x65\x66\x67\xf0\xf2\xf3")
EVEX = 0x62  # in 64-bit mode this byte only ever starts an EVEX (AVX-512) instruction
RIP = re.compile(r"rip ([+-]) (0x[0-9a-f]+|\d+)\]")
CHOOSER_DEPTH = 2
DATA_TYPES = ("SHT_PROGBITS", "SHT_INIT_ARRAY", "SHT_FINI_ARRAY", "SHT_PREINIT_ARRAY")
"""Sections whose words a program may load as pointers (symbol tables only describe functions)."""
UNWIND = (".eh_frame", ".gcc_except_table")
"""Unwind tables name every function's range for exceptions and debuggers, not a way to call it."""


@dataclass
class Function:
    start: int
    end: int
    name: str


@dataclass
class Code:
    """What one pass over a binary's instructions found, by function."""

    avx512: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    cpuid: set[str] = field(default_factory=set)
    calls: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))  # target -> callers (call, jmp, jcc)
    refs: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))  # address -> functions taking it
    callees: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))


def is_avx512(code: bytes | memoryview, offset: int, size: int, mnemonic: str) -> bool:
    """Whether the instruction at ``offset`` is AVX-512: EVEX-encoded, or an opmask instruction."""
    end = offset + size
    while offset < end and code[offset] in LEGACY_PREFIXES:
        offset += 1
    return (offset < end and code[offset] == EVEX) or mnemonic.startswith("k")


class Functions:
    """Address -> the function symbol that covers it."""

    def __init__(self, functions: Iterable[Function]) -> None:
        self.sorted = sorted(functions, key=lambda f: f.start)
        self.starts = [f.start for f in self.sorted]
        self.by_start = {f.start: f.name for f in self.sorted}

    def at(self, address: int) -> str:
        i = bisect.bisect_right(self.starts, address) - 1
        if i >= 0 and address < self.sorted[i].end:
            return self.sorted[i].name
        return f"<no symbol at {address:#x}>"


def read_code(sections: Iterable[tuple[int, bytes]], functions: Functions) -> Code:
    """Disassemble each ``(address, bytes)`` section once and record what the check needs."""
    found = Code()
    disassembler = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    disassembler.skipdata = True
    for base, data in sections:
        view = memoryview(data)
        for address, size, mnemonic, operands in disassembler.disasm_lite(data, base):
            if mnemonic == ".byte":
                continue
            where = functions.at(address)
            if is_avx512(view, address - base, size, mnemonic):
                found.avx512[where] += 1
            if mnemonic == "cpuid":
                found.cpuid.add(where)
            elif (mnemonic == "call" or mnemonic.startswith("j")) and operands.startswith("0x"):
                target = int(operands, 16)
                found.calls[target].add(where)
                if mnemonic == "call":
                    found.callees[where].add(target)
            elif "rip" in operands:
                match = RIP.search(operands)
                if match:
                    displacement = int(match.group(2), 0)
                    found.refs[address + size + (displacement if match.group(1) == "+" else -displacement)].add(where)
            elif mnemonic in ("mov", "movabs", "push", "lea") and "0x" in operands and "[" not in operands:
                last = operands.rsplit(", ", 1)[-1]
                if last.startswith("0x"):
                    found.refs[int(last, 16)].add(where)
    return found


def unchosen(code: Code, functions: Functions, data: np.ndarray, data_names: set[str]) -> dict[str, str]:
    """Each function with AVX-512 instructions that no cpuid check guards, with why; empty when all are guarded.

    ``data`` holds every 8-byte word of the binary's data and every relocation's addend.
    """
    start_of = {name: start for start, name in functions.by_start.items()}
    starts = np.array([start_of.get(name, -1) for name in code.avx512], np.int64)
    data_refs = set(starts[np.isin(starts, data)].tolist())
    cpuid_depth = set(code.cpuid)
    for _ in range(CHOOSER_DEPTH):
        cpuid_depth |= {
            caller for caller, targets in code.callees.items() if any(functions.by_start.get(t) in cpuid_depth for t in targets)
        }
    problems: dict[str, str] = {}
    guarded_by_caller: dict[str, set[str]] = {}
    for name in code.avx512:
        start = start_of.get(name)
        if start is None:
            problems[name] = "the instructions lie outside any function symbol"
        elif start in data_refs or name in data_names:
            problems[name] = "its address is stored in data (a pointer, a relocation, the PLT or GOT): what picks it is unknown"
        elif takers := code.refs.get(start, set()) - {name} - cpuid_depth:
            problems[name] = f"its address is taken in {sorted(takers)}, which never execute cpuid"
        else:
            guarded_by_caller[name] = code.calls.get(start, set()) - {name}
    changed = True
    while changed:  # a direct caller is fine only if it is itself a guarded function of this kind
        changed = False
        for name, callers in list(guarded_by_caller.items()):
            if bad := [c for c in callers if c not in guarded_by_caller]:
                problems[name] = f"called directly from {sorted(bad)}"
                del guarded_by_caller[name]
                changed = True
    return problems


@dataclass
class Binary:
    path: Path
    problems: dict[str, str]
    exported: set[str]  # its functions with AVX-512 that other binaries could call by name
    imported: set[str]


def check_binary(path: Path) -> Binary | None:
    """Check one ELF file (None if it is not x86-64 code: aarch64 wheels have no AVX-512 to find)."""
    with path.open("rb") as stream:
        elf = ELFFile(stream)
        if elf["e_machine"] != "EM_X86_64":
            return None
        symbols, exported_names, imported = [], set(), set()
        for table in (elf.get_section_by_name(".symtab"), elf.get_section_by_name(".dynsym")):
            if table is None:
                continue
            for symbol in table.iter_symbols():
                if symbol["st_info"]["type"] == "STT_FUNC" and symbol["st_size"] and symbol["st_shndx"] != "SHN_UNDEF":
                    symbols.append(Function(symbol["st_value"], symbol["st_value"] + symbol["st_size"], symbol.name))
                    if table.name == ".dynsym" and symbol["st_info"]["bind"] != "STB_LOCAL":
                        exported_names.add(symbol.name)
                elif table.name == ".dynsym" and symbol["st_shndx"] == "SHN_UNDEF" and symbol.name:
                    imported.add(symbol.name)
        functions = Functions(symbols)
        executable, words, addends, data_names = [], [], [], set()
        for section in elf.iter_sections():
            flags = section["sh_flags"]
            if section["sh_type"] == "SHT_PROGBITS" and flags & SH_FLAGS.SHF_EXECINSTR:
                executable.append((section["sh_addr"], section.data()))
            elif flags & SH_FLAGS.SHF_ALLOC and section["sh_type"] in DATA_TYPES and not section.name.startswith(UNWIND):
                content = section.data()
                words.append(np.frombuffer(content[: len(content) // 8 * 8], "<i8"))
            if isinstance(section, RelocationSection):
                table = elf.get_section(section["sh_link"])
                for relocation in section.iter_relocations():
                    if relocation.is_RELA():
                        addends.append(relocation["r_addend"])
                    if relocation["r_info_sym"] and table is not None and hasattr(table, "get_symbol"):
                        data_names.add(table.get_symbol(relocation["r_info_sym"]).name)
        code = read_code(executable, functions)
    data = np.concatenate([*words, np.array(addends, np.int64)])
    problems = unchosen(code, functions, data, data_names)
    return Binary(path, problems, {n for n in code.avx512 if n in exported_names}, imported)


def is_elf(path: Path) -> bool:
    with path.open("rb") as stream:
        return stream.read(4) == b"\x7fELF"


def check_tree(root: Path) -> dict[str, dict[str, str]]:
    """Every ELF file under ``root`` -> its unguarded functions (and any that import another's AVX-512 function)."""
    binaries = [b for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink() and is_elf(p) if (b := check_binary(p))]
    exported = {name for b in binaries for name in b.exported}
    report = {}
    for binary in binaries:
        problems = dict(binary.problems)
        for name in binary.imported & exported:
            problems[name] = "imported from another binary, where it needs AVX-512: called without a cpuid check"
        if problems:
            report[str(binary.path.relative_to(root))] = problems
    return report
