"""Extension by registration: a decorator that fills an op -> handler (or scheme -> exporter) table."""

from __future__ import annotations


def registrar(table: dict):
    """`@handles("MatMul", ...)`: a decorator that registers a handler for each key in `table` (the supported list
    and its error messages come from the table)."""
    def handles(*keys):
        def deco(fn):
            for key in keys:
                table[key] = fn
            return fn
        return deco
    return handles
