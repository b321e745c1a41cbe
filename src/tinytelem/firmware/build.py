"""Build the firmware for a target by running the project's Makefile.

Builds go to a directory outside the source tree (``build/firmware/<target>`` under the project
root unless told otherwise); make decides what is stale, so calling :func:`build` again is cheap.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tinytelem.errors import ConfigError, ModelError
from tinytelem.firmware.targets import (
    PACKAGED_FIRMWARE,
    Target,
    firmware_dir,
    get_target,
    require_tools,
)

__all__ = ["TX_POLICIES", "BuildResult", "ModelPlan", "build", "default_build_dir", "plan_model"]

BUILD_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class BuildResult:
    """What a build produced: the ELF (or the native executable) and the raw image."""

    target: str
    elf: Path
    bin: Path | None
    """Raw flash image (None for the native build)."""
    build_dir: Path
    context: int = 0
    """Positions the llama engine's KV cache holds (0 for the demo engine)."""
    arena_bytes: int = 0
    """Static arena of the llama engine: activations + KV cache at full context (peak)."""


RAM_RESERVE = 8 * 1024
"""RAM kept for everything but the arena: telemetry buffers (~2.6 KB), port state, slack."""
FLASH_RESERVE = 64 * 1024
"""Flash kept for the code (the engine and telemetry are ~10 KB)."""
MIN_CONTEXT = 16
_MIN_GROUP = 16
TX_RING_BYTES = 4096 + 512
"""The transmit ring a build with a link rate adds (firmware/core/tt_txring.h: ring + reserve)."""
TX_POLICIES = ("drop", "block")


@dataclass(frozen=True)
class ModelPlan:
    """How a .tlm model is linked: its image, hash, the context and arena that fit the target."""

    image: bytes
    sha256: str
    context: int
    arena_bytes: int
    n_layers: int
    kernels: int = 0xFF


# The kinds of tensor whose kernels the engine compiles in (TT_K_* in firmware/engine/tt_tlm.h).
_K_F32, _K_F16, _K_ASYM, _K_GANY = 0x001, 0x002, 0x040, 0x080
_K_BITS = {2: 0x004, 3: 0x008, 4: 0x010, 8: 0x020}


def kernel_mask(type_codes: Iterable[tuple[int, int]]) -> int:
    """The TT_KERNELS mask for a model's (type code, group size) pairs: a firmware linking one
    model carries only the kernels that model calls."""
    mask = 0
    for code, group in type_codes:
        if code == 0x00:
            mask |= _K_F32
        elif code == 0x01:
            mask |= _K_F16
        else:
            mask |= _K_BITS.get(code & 0x0F, 0)
            mask |= _K_ASYM if code & 0xF0 == 0x20 else 0
            mask |= _K_GANY if group != 32 else 0
    return mask


def _up8(n: int) -> int:
    return (n + 7) & ~7


def _memory(t: Target) -> tuple[int | None, int | None]:
    """(RAM, FLASH) bytes available to data and image, from the port's ``memory.ld`` (none for
    the native port)."""
    if t.native:
        return None, None
    text = (firmware_dir() / "ports" / t.port / "memory.ld").read_text()
    units = {"": 1, "K": 1024, "M": 1024 * 1024}

    def length(region: str) -> int | None:
        m = re.search(rf"{region}\s*\([^)]*\)\s*:.*?LENGTH\s*=\s*(\d+)([KM]?)", text)
        return int(m.group(1)) * units[m.group(2)] if m else None

    stack = re.search(r"STACK_SIZE\s*=\s*(0x[0-9a-fA-F]+|\d+)", text)
    ram = length("RAM")
    if ram is not None and stack is not None:
        ram -= int(stack.group(1), 0)
    return ram, length("FLASH")


def plan_model(target: Target, model_path: Path, max_context: int | None = None,
               ram_extra: int = 0) -> ModelPlan:
    """Validate ``model_path`` and size the llama engine's arena for ``target``.

    The arena layout mirrors ``tt_engine_init`` in firmware/engine/tt_llama.c (8-byte aligned
    blocks): activations, matmul and sampler scratch, then K and V caches of ``context``
    positions. On a small board the context shrinks until the arena fits in RAM (less
    ``ram_extra``, e.g. the transmit ring).

    Raises:
        ConfigError: the model is not a valid .tlm, or it does not fit the target's flash, or
            not even MIN_CONTEXT positions fit its RAM.
    """
    from tinytelem.models.tlm import parse_tlm

    try:
        image = model_path.read_bytes()
        qmodel, infos, _align = parse_tlm(image, str(model_path))
    except OSError as exc:
        raise ConfigError(f"cannot read the model {model_path}: {exc}") from exc
    except ModelError as exc:
        raise ConfigError(str(exc)) from exc
    c = qmodel.config
    kv_dim = c.dim * c.n_kv_heads // c.n_heads
    max_cols = max([c.dim, c.hidden_dim] + [i.shape[1] for i in infos
                                              if len(i.shape) == 2 and not
                                              i.name.startswith("rope.")])
    # x, xb, q, hb, hb2, logits, sampler ids, expanded activations (2 bytes a column), then
    # per-group activation scales and sums
    fixed = (2 * _up8(4 * max_cols) + _up8(4 * c.dim) + 2 * _up8(4 * max_cols)
             + _up8(2 * c.vocab_size) + _up8(4 * c.vocab_size) + _up8(2 * max_cols)
             + _up8(8 * (max_cols // _MIN_GROUP + 1)))

    def arena(ctx: int) -> int:
        return fixed + _up8(4 * ctx) + 2 * _up8(4 * c.n_layers * ctx * kv_dim)

    ctx = min(c.seq_len, max_context or c.seq_len)
    ram, flash = _memory(target)
    if flash is not None and len(image) > flash - FLASH_RESERVE:
        raise ConfigError(f"the model ({len(image)} B) does not fit the {flash} B flash of "
                          f"{target.name}; quantize to fewer bits or pick a bigger board")
    if ram is not None:
        budget = ram - RAM_RESERVE - ram_extra
        while ctx > MIN_CONTEXT and arena(ctx) > budget:
            ctx //= 2
        if arena(ctx) > budget:
            raise ConfigError(f"the model needs {arena(ctx)} B of arena even at {ctx} positions; "
                              f"{target.name} has {budget} B of RAM for it")
    return ModelPlan(image, hashlib.sha256(image).hexdigest(), ctx, arena(ctx), c.n_layers,
                     kernel_mask((i.type_code, i.group_size) for i in infos))


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def write_model_source(plan: ModelPlan, out_dir: Path) -> Path:
    """The model as C (export_c's array plus ``tlm_model_sha256``), rewritten only on change."""
    from tinytelem.models.export_c import c_source
    from tinytelem.models.tlm import HEADER

    align = int.from_bytes(plan.image[16:20], "little") if len(plan.image) >= HEADER.size else 16
    source, header = c_source(plan.image, "tlm_model", align)
    sha = ", ".join(f"0x{b:02x}" for b in bytes.fromhex(plan.sha256))
    source += f"\nconst uint8_t tlm_model_sha256[32] = {{{sha}}};\n"
    _write_if_changed(out_dir / "model" / "tlm_model.h", header)
    c_path = out_dir / "model" / "tlm_model.c"
    _write_if_changed(c_path, source)
    return c_path


def default_build_dir(target: str, variant: str = "demo") -> Path:
    """``build/firmware/<target>[-variant]`` under the project root (ignored by git); for an
    installed tinytelem, under the user's cache (``$XDG_CACHE_HOME`` or ``~/.cache``)
    ``/tinytelem/firmware``, not inside the installed package."""
    name = target if variant == "demo" else f"{target}-{variant}"
    src = firmware_dir()
    if src == PACKAGED_FIRMWARE:
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(cache) / "tinytelem" / "firmware" / name
    return src.parent / "build" / "firmware" / name


def build(target: str | Target, model_path: Path | None = None, *,
          build_dir: Path | None = None, trace_level: int = 1,
          extra_cflags: str = "", max_context: int | None = None,
          make_vars: dict[str, str] | None = None, link_baud: int | None = None,
          tx_policy: str = "drop") -> BuildResult:
    """Build the firmware for ``target``; with ``model_path`` the llama engine and that model.

    Args:
        target: A name from :data:`tinytelem.firmware.targets.TARGETS`.
        model_path: A ``.tlm`` model to link in (needs the llama engine); None builds the demo
            engine, which exercises the telemetry without a model.
        build_dir: Where objects and images go (default :func:`default_build_dir`).
        trace_level: The trace level after boot (0 off, 1 tokens, 2 spans).
        extra_cflags: Added to the compiler flags (e.g. ``-DTT_CPU_HZ=16000000``).
        max_context: Cap on the positions the KV cache holds (default: the model's seq_len,
            shrunk to what fits the target's RAM).
        make_vars: Extra ``NAME=value`` make variables, e.g. ``ARCH`` to build the MPS2 board
            for another core (the engine calibration builds Cortex-M0+ code this way).
        link_baud: The link's rate in bits/s: frames leave a transmit ring at it, timed by the
            device clock (firmware/core/tt_txring.h); None or 0: a free link (no ring).
        tx_policy: What a full ring does: ``drop`` trace frames (counted in tx_dropped) or
            ``block`` every frame until there is room.

    Raises:
        ConfigError: a tool is missing (with the install command), the model is invalid or
            does not fit the target, or the compiler failed (its last lines are in the message).
    """
    t = get_target(target) if isinstance(target, str) else target
    require_tools(t)
    if tx_policy not in TX_POLICIES:
        raise ConfigError(f"unknown transmit policy {tx_policy!r}; choose drop or block")
    baud = int(link_baud or 0)
    plan = None if model_path is None else plan_model(t, Path(model_path), max_context,
                                                      TX_RING_BYTES if baud else 0)
    variant = "demo" if plan is None else f"llama-{plan.sha256[:12]}-{plan.context}"
    if baud:
        variant += f"-link{baud}-{tx_policy}"
    out_dir = build_dir or default_build_dir(t.name, variant)
    argv = ["make", "-s", "-C", str(firmware_dir()), f"TARGET={t.name}",
            f"BUILD_DIR={out_dir}", f"LEVEL={int(trace_level)}"]
    if plan is not None:
        argv += ["ENGINE=llama", f"MODEL_C={write_model_source(plan, out_dir)}",
                 f"ARENA_BYTES={plan.arena_bytes}", f"MAX_SEQ={plan.context}",
                 f"MAX_LAYERS={plan.n_layers}", f"KERNELS=0x{plan.kernels:03x}"]
    if baud:
        argv += [f"LINK_BAUD={baud}", f"TX_POLICY={tx_policy}"]
    if extra_cflags:
        argv.append(f"EXTRA_CFLAGS={extra_cflags}")
    argv += [f"{k}={v}" for k, v in sorted((make_vars or {}).items())]
    env = dict(os.environ)
    env.pop("MAKEFLAGS", None)
    if t.native:
        env.setdefault("CC", "cc")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                              env=env, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"building the firmware for {t.name} failed to run: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise ConfigError(f"building the firmware for {t.name} failed:\n{tail}")
    ctx, arena = (0, 0) if plan is None else (plan.context, plan.arena_bytes)
    if t.native:
        exe = out_dir / "tinytelem-fw"
        return BuildResult(t.name, exe, None, out_dir, ctx, arena)
    return BuildResult(t.name, out_dir / "tinytelem-fw.elf", out_dir / "tinytelem-fw.bin", out_dir,
                       ctx, arena)
