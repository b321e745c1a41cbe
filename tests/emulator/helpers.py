"""Shared test helpers for the device twin (fake platforms, a cached built-in model)."""

from __future__ import annotations

import dataclasses
from functools import lru_cache

from tinytelem.emulator.twin import TwinDevice
from tinytelem.models.llama2c import LlamaModel, builtin_model
from tinytelem.platforms import Platform, get_platform
from tinytelem.protocol.messages import TraceLevel


@lru_cache(maxsize=4)
def model(seed: int = 0) -> LlamaModel:
    """The built-in stories260K-shaped model (cached: building it takes a moment)."""
    return builtin_model(seed)


def platform(name: str = "esp32s3", **changes: object) -> Platform:
    """A real platform, optionally with fields replaced (a fake board for edge cases)."""
    p = get_platform(name)
    return dataclasses.replace(p, **changes) if changes else p  # type: ignore[arg-type]


def device(
    name: str = "esp32s3",
    *,
    trace_level: TraceLevel = TraceLevel.SPANS,
    weight_bits: int = 4,
    drift_ppm: float = 0.0,
    tick_offset: int = 0,
) -> TwinDevice:
    """A twin on ``name`` running the built-in model."""
    return TwinDevice(
        platform(name), model(), trace_level=trace_level, weight_bits=weight_bits,
        drift_ppm=drift_ppm, tick_offset=tick_offset,
    )


def greedy(prompt: tuple[int, ...], n: int) -> list[int]:
    """Reference greedy continuation computed independently of the twin."""
    from tinytelem.models.reference import Transformer

    tf = Transformer(model())
    logits = None
    for pos, tok in enumerate(prompt):
        logits = tf.forward(tok, pos)
    out: list[int] = []
    for j in range(n):
        if j:
            logits = tf.forward(out[-1], len(prompt) - 1 + j)
        assert logits is not None
        nxt = int(logits.argmax())
        if nxt == 1:
            break
        out.append(nxt)
    return out
