# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""What a subcommand hands back: data for --json, text for people, and an exit code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Result:
    data: Any
    lines: list[str] = field(default_factory=list)
    code: int = 0
    raw: bytes = b""  # for stdout as it is, instead of ``lines``

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def table(rows: list[list[str]], header: list[str]) -> list[str]:
    """Rows as aligned columns."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in [header, *rows]]  # fmt: skip
