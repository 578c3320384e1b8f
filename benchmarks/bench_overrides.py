"""The KEY=VALUE config overrides the benchmark scripts take (gpu_bench.py, torch_reference.py): no JAX, no torch."""

import ast


def parse_overrides(items) -> dict:
    """["model.features=128", "codec.target=paper", ...] -> {key: value}; values are read as Python literals
    where they parse (128, (1, 2), True), else kept as strings."""
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"an override is KEY=VALUE; got {item!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out
