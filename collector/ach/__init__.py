"""ACH file formats: the NACHA file layout for debit files and the returns that come back."""

from __future__ import annotations

from collector.ach.nacha import (
    DebitEntry,
    NachaError,
    NachaFile,
    Originator,
    ParsedFile,
    ReturnEntry,
    build_debit_file,
    parse_file,
    parse_returns,
    validate,
)

__all__ = [
    "DebitEntry",
    "NachaError",
    "NachaFile",
    "Originator",
    "ParsedFile",
    "ReturnEntry",
    "build_debit_file",
    "parse_file",
    "parse_returns",
    "validate",
]
