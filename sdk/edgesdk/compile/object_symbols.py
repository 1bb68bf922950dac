"""What compiled device objects need from outside: the symbols they use and none of them define,
read from the ELF objects themselves (any ISA: AArch64, Cortex-M, x86-64)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection


def undefined_symbols(objects: Sequence[Path]) -> list[str]:
    """The global symbols ``objects`` reference that none of them defines, sorted: what a link
    of them must find elsewhere (the C library and libm for standalone code)."""
    used: set[str] = set()
    defined: set[str] = set()
    for path in objects:
        with path.open("rb") as stream:
            for section in ELFFile(stream).iter_sections():
                if not isinstance(section, SymbolTableSection):
                    continue
                for symbol in section.iter_symbols():
                    if not symbol.name or symbol["st_info"]["bind"] == "STB_LOCAL":
                        continue
                    (used if symbol["st_shndx"] == "SHN_UNDEF" else defined).add(symbol.name)
    return sorted(used - defined)
