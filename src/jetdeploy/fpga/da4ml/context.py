"""What every tracer handler sees beside its node: the softmax tables, the list of approximations made so far,
the BatchNorm multiplier rounding and where in the graph it is (for error messages)."""

from __future__ import annotations

from dataclasses import dataclass

from ...settings import SoftmaxTables


@dataclass
class TraceContext:
    tables: SoftmaxTables
    approximations: list
    bn_mult_bits: int | None = None
    where: str = ""

    def note(self, text: str) -> None:
        if text not in self.approximations:
            self.approximations.append(text)
