"""What every format reader shares: the source as bytes, the format from the name, the
decoded-size budget, strict UTF-8, and short messages from foreign exceptions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Union

from cvx_core.data.trajectory import TrajectoryError

__all__ = [
    "FORMATS",
    "Source",
    "DecodedSizeError",
    "read_source",
    "detect_format",
    "looks_binary",
    "mb",
    "over_budget",
    "check_text_budget",
    "decode_utf8",
    "duplicate_name",
    "first_line",
]

Source = Union[str, os.PathLike, IO[bytes], bytes]

FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".npz": "npz",
}


class DecodedSizeError(TrajectoryError):
    """A file whose decoded data would exceed the ``max_decoded_bytes`` budget (checked
    from its declared sizes before decoding). ``decoded`` and ``budget`` are in bytes."""

    def __init__(self, message: str, *, file: str, decoded: int, budget: int) -> None:
        super().__init__(message, file=file)
        self.decoded = decoded
        self.budget = budget


def read_source(source: Source, name: str | None) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), name or "<bytes>"
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if not p.exists():
            raise TrajectoryError(f"{p}: no such file", file=str(p))
        if p.is_dir():
            raise TrajectoryError(f"{p}: is a folder, expected a file", file=str(p))
        return p.read_bytes(), name or p.name
    if hasattr(source, "read"):
        if hasattr(source, "seek"):
            try:
                source.seek(0)
            except Exception:  # pragma: no cover - unseekable streams
                pass
        data = source.read()
        if isinstance(data, str):
            data = data.encode("utf-8")
        return bytes(data), name or Path(str(getattr(source, "name", "") or "<upload>")).name
    raise TypeError(f"load_trajectories: unsupported source type {type(source).__name__}")


def detect_format(fname: str, format: str | None) -> str:
    if format is not None:
        fmt = format.lower().lstrip(".")
        if fmt not in set(FORMATS.values()):
            raise TrajectoryError(
                f"{fname}: unknown format {format!r}; expected one of csv, parquet, jsonl, npz", file=fname
            )
        return fmt
    ext = Path(fname).suffix.lower()
    if ext not in FORMATS:
        raise TrajectoryError(
            f"{fname}: cannot tell the format from the extension {ext or '(none)'!r}; expected "
            ".csv, .parquet, .jsonl or .npz",
            file=fname,
        )
    return FORMATS[ext]


def looks_binary(data: bytes) -> bool:
    """True for Parquet or zip (``.npz``) content, or any NUL byte early on: not a text table."""
    return data.startswith((b"PAR1", b"PK\x03\x04")) or b"\x00" in data[:4096]


def mb(n: float) -> str:
    return f"{n / 2**20:,.1f} MB"


def over_budget(fname: str, decoded: float, budget: int, what: str) -> DecodedSizeError:
    return DecodedSizeError(
        f"{fname}: {what} decodes to about {mb(decoded)}, over the limit of {mb(budget)} for one "
        "file; load a smaller file (or raise the limit)",
        file=fname,
        decoded=int(decoded),
        budget=int(budget),
    )


def check_text_budget(data: bytes, fname: str, budget: int | None) -> None:
    if budget is not None and len(data) > budget:
        raise over_budget(fname, len(data), budget, "the text")


def decode_utf8(data: bytes, fname: str, *, first_row_line: int) -> str:
    """Whole-file strict UTF-8 (a leading BOM is dropped); an invalid byte names its line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        row = line - first_row_line + 1
        raise TrajectoryError(
            f"{fname}: line {line} is not valid UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start}); "
            "save the file as UTF-8",
            file=fname,
            row=row if row >= 1 else None,
        ) from None


def duplicate_name(names: list[str]) -> str | None:
    seen: set[str] = set()
    for c in names:
        if c in seen:
            return c
        seen.add(c)
    return None


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
