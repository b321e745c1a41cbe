"""``tinytelem model``: quantize, generate, inspect (more sub-commands plug in, see below).

Extension hook: at import, this module imports ``tinytelem.cli.model_b`` if it exists. That
module adds sub-commands with ``model.add_command(cmd)`` and extends the formats through:

* ``register_input_format(".gguf", loader)`` -- ``loader(path) -> LlamaModel | QuantizedModel``,
  used by ``generate``, ``inspect`` and ``quantize``;
* ``register_output_format(".onnx", writer)`` -- ``writer(request, out_path) -> dict`` of facts
  to print, where ``request`` is a :class:`QuantizeRequest`;
* ``register_quant_type("q4_0", "help line", extensions=(".gguf",))`` -- a value for
  ``quantize --type``; ``request.qtype`` carries it to the writer (``--type`` and ``--bits``
  are mutually exclusive; the ``.tlm`` / ``.c`` writers only take ``--bits``).

Only a missing ``model_b`` module is ignored; an error inside it propagates.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tinytelem.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from tinytelem.models.llama2c import LlamaModel
    from tinytelem.models.quant import QuantizedModel
    from tinytelem.models.tokenizer import TextCodec

    AnyModel = LlamaModel | QuantizedModel

__all__ = ["INPUT_FORMATS", "OUTPUT_FORMATS", "PLAN_SCHEMAS", "QUANT_TYPES", "QuantPlan",
           "QuantizeRequest", "load_model", "model", "read_plan", "register_input_format",
           "register_output_format", "register_quant_type"]


@dataclass
class QuantizeRequest:
    """What ``model quantize`` asks an output writer to produce.

    Attributes:
        source: The float model read from IN.
        bits: ``--bits`` (None when ``--type`` was given).
        group_size: ``--group``.
        symmetric: False with ``--asym``.
        method: ``rtn`` or ``search``.
        qtype: ``--type`` value (None when ``--bits`` was given).
        alignment: ``--align`` (for container formats that align tensors).
        progress: Call with a tensor name as each is quantized (drives the progress bar).
        source_path: The file IN came from (None for ``builtin``), so a writer can embed
            what sits beside it (the GGUF writer stores the llama2.c tokenizer it finds there).
        per_tensor_bits: From ``--plan``: width per tensor (32 = float32), else None.
        per_tensor_group: From ``--plan``: group size per tensor, else None.
    """

    source: LlamaModel
    bits: int | None
    group_size: int
    symmetric: bool
    method: str
    qtype: str | None
    alignment: int = 16
    progress: Callable[[str], None] = field(default=lambda name: None)
    source_path: str | None = None
    per_tensor_bits: dict[str, int] | None = None
    per_tensor_group: dict[str, int] | None = None

    def quantize(self) -> QuantizedModel:
        """The group-wise quantized model (``--bits`` path) for writers that need one."""
        from tinytelem.models.quant import Method, quantize_model

        if self.bits is None:
            raise ConfigError(f"--type {self.qtype} cannot be written to this format; use "
                              "--bits B for .tlm and .c outputs")
        method: Method = "search" if self.method == "search" else "rtn"
        return quantize_model(self.source, self.bits, self.group_size, self.symmetric, method,
                              per_tensor_bits=self.per_tensor_bits, progress=self.progress,
                              per_tensor_group=self.per_tensor_group)


Loader = Callable[[Path], "AnyModel"]
Writer = Callable[[QuantizeRequest, Path], dict[str, Any]]
INPUT_FORMATS: dict[str, Loader] = {}
OUTPUT_FORMATS: dict[str, Writer] = {}
QUANT_TYPES: dict[str, tuple[str, tuple[str, ...]]] = {}


def register_input_format(ext: str, loader: Loader) -> None:
    """Teach ``generate`` / ``inspect`` / ``quantize`` to read files ending in ``ext``."""
    INPUT_FORMATS[ext.lower()] = loader


def register_output_format(ext: str, writer: Writer) -> None:
    """Teach ``quantize -o`` to write files ending in ``ext``."""
    OUTPUT_FORMATS[ext.lower()] = writer


def register_quant_type(name: str, help_line: str, extensions: tuple[str, ...] = ()) -> None:
    """Accept ``quantize --type name`` (only for outputs ending in one of ``extensions``)."""
    QUANT_TYPES[name.lower()] = (help_line, tuple(e.lower() for e in extensions))


def _load_llama2c(path: Path) -> AnyModel:
    from tinytelem.models.llama2c import load_checkpoint

    return load_checkpoint(path)


def _load_tlm(path: Path) -> AnyModel:
    from tinytelem.models.tlm import read_tlm

    return read_tlm(path)


register_input_format(".bin", _load_llama2c)
register_input_format(".tlm", _load_tlm)


def load_model(spec: str) -> AnyModel:
    """A model from a path (format by extension) or ``builtin[:SHAPE][:SEED]`` (seeded random
    weights; shapes 260k (default), 1m, 8m).

    Raises:
        ConfigError: For an unknown extension or seed.
        ModelError: When the file is unreadable or invalid.
    """
    if spec == "builtin" or spec.startswith("builtin:"):
        from tinytelem.models.llama2c import builtin_from_spec

        try:
            return builtin_from_spec(spec)
        except ModelError as exc:
            raise ConfigError(str(exc)) from exc
    path = Path(spec)
    loader = INPUT_FORMATS.get(path.suffix.lower())
    if loader is None:
        known = ", ".join(sorted(INPUT_FORMATS))
        raise ConfigError(f"{path}: unknown model format {path.suffix!r}; supported: {known} "
                          "(or builtin[:SEED])")
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist; check the path")
    return loader(path)


def _float_model(m: AnyModel) -> LlamaModel:
    from tinytelem.models.quant import QuantizedModel, dequantize_model

    return dequantize_model(m) if isinstance(m, QuantizedModel) else m


def _write_tlm(req: QuantizeRequest, out: Path) -> dict[str, Any]:
    from tinytelem.models.tlm import write_tlm

    qm = req.quantize()
    size = write_tlm(qm, out, req.alignment)
    return {"output": str(out), "format": "tlm", "bytes": size,
            "bits_per_weight": round(qm.bits_per_weight(), 3), "params": qm.param_count()}


def _write_c(req: QuantizeRequest, out: Path) -> dict[str, Any]:
    from tinytelem.models.export_c import export_c
    from tinytelem.models.tlm import serialize_tlm

    qm = req.quantize()
    image = serialize_tlm(qm, req.alignment)
    c_path, h_path = export_c(image, out, symbol="tlm_model", alignment=req.alignment)
    return {"output": str(c_path), "header": str(h_path), "format": "c", "bytes": len(image),
            "bits_per_weight": round(qm.bits_per_weight(), 3), "params": qm.param_count()}


register_output_format(".tlm", _write_tlm)

PLAN_SCHEMAS = ("tinytelem.plan/1",)
"""Plan schemas ``quantize --plan`` reads (written by ``model optimize -o``)."""


@dataclass(frozen=True)
class QuantPlan:
    """The quantization part of a ``model optimize`` plan file."""

    group_size: int
    symmetric: bool
    method: str
    per_tensor_bits: dict[str, int]
    per_tensor_group: dict[str, int] | None


def _int_map(plan: dict[str, Any], key: str, path: Path) -> dict[str, int] | None:
    value = plan.get(key)
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
            for k, v in value.items()):
        raise ConfigError(f"{path}: plan field {key!r} must map tensor names to integers")
    return dict(value)


def read_plan(path: Path) -> QuantPlan:
    """Read and check a plan file written by ``tinytelem model optimize -o``.

    Raises:
        ConfigError: Unreadable file, not JSON, unknown schema, or a missing/ill-typed field;
            the message names the field.
    """
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read plan {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not a JSON plan ({exc}); write one with "
                          "`tinytelem model optimize MODEL --platform P -o plan.json`") from exc
    if not isinstance(plan, dict) or plan.get("schema") not in PLAN_SCHEMAS:
        schema = plan.get("schema") if isinstance(plan, dict) else None
        raise ConfigError(f"{path}: plan schema {schema!r} is not one of {list(PLAN_SCHEMAS)}; "
                          "write it with `tinytelem model optimize ... -o plan.json`")
    bits = _int_map(plan, "per_tensor_bits", path)
    if not bits:
        raise ConfigError(f"{path}: plan has no 'per_tensor_bits'; re-run model optimize")
    group, sym, method = plan.get("group_size"), plan.get("symmetric", True), \
        plan.get("method", "rtn")
    if not isinstance(group, int) or isinstance(group, bool):
        raise ConfigError(f"{path}: plan field 'group_size' must be an integer, got {group!r}")
    if not isinstance(sym, bool):
        raise ConfigError(f"{path}: plan field 'symmetric' must be true or false, got {sym!r}")
    if method not in ("rtn", "search"):
        raise ConfigError(f"{path}: plan field 'method' must be 'rtn' or 'search', "
                          f"got {method!r}")
    return QuantPlan(group, sym, method, bits, _int_map(plan, "per_tensor_group", path))
register_output_format(".c", _write_c)


@click.group("model")
def model() -> None:
    """Quantize, run, inspect (and, with the analysis commands, validate/evaluate) models.

    MODEL arguments accept llama2.c checkpoints (.bin), .tlm files and builtin[:SEED] (a random
    model with stories260K's shape), plus any format registered by the other model commands.
    """


@model.command("quantize")
@click.argument("source", metavar="IN")
@click.option("--bits", type=int, help="Weight bits: 2, 3, 4 or 8 (embedding stays 8-bit).")
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False, path_type=Path),
              help="A plan from `model optimize -o plan.json`: per-tensor bits and group "
              "sizes (instead of --bits/--group/--asym/--method).")
@click.option("--type", "qtype", help="A named quantization type (see --help of the "
              "format, e.g. q4_0 for .gguf); instead of --bits.")
@click.option("--group", "group_size", type=int, default=32, show_default=True,
              help="Group size along the input dimension (multiple of 8, 16..256).")
@click.option("--asym", is_flag=True, help="Asymmetric levels (scale + zero point).")
@click.option("--method", type=click.Choice(["rtn", "search"]), default="rtn",
              show_default=True, help="Round-to-nearest or error-minimising scale search.")
@click.option("--align", "alignment", type=int, default=16, show_default=True,
              help="Tensor alignment in the image: 4, 8, 16, 32 (ESP32-S3) or 64.")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output file; its extension picks the format.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
def quantize(source: str, bits: int | None, plan_path: Path | None, qtype: str | None,
             group_size: int, asym: bool, method: str, alignment: int, out: Path,
             as_json: bool) -> None:
    """Quantize IN group-wise and write OUT (.tlm, .c, or a registered format)."""
    from rich.progress import Progress

    writer = OUTPUT_FORMATS.get(out.suffix.lower())
    if writer is None:
        known = ", ".join(sorted(OUTPUT_FORMATS))
        raise ConfigError(f"{out}: cannot write {out.suffix!r} files; use one of {known}")
    if sum(x is not None for x in (bits, qtype, plan_path)) != 1:
        raise ConfigError("give exactly one of --bits B, --type NAME or --plan plan.json")
    plan = read_plan(plan_path) if plan_path is not None else None
    if plan is not None:
        # Every matrix is named in per_tensor_bits; 8 is only the fallback quantize_model needs.
        bits, group_size, asym, method = 8, plan.group_size, not plan.symmetric, plan.method
    if qtype is not None:
        entry = QUANT_TYPES.get(qtype.lower())
        if entry is None:
            known = ", ".join(sorted(QUANT_TYPES)) or "none installed"
            raise ConfigError(f"unknown --type {qtype!r}; known types: {known}")
        if entry[1] and out.suffix.lower() not in entry[1]:
            raise ConfigError(f"--type {qtype} is written to {', '.join(entry[1])} files only")
    src = _float_model(load_model(source))
    out.parent.mkdir(parents=True, exist_ok=True)
    total = 2 + src.config.n_layers * 7 + (0 if src.config.shared_classifier else 1)
    started = time.perf_counter()
    with Progress(transient=True, disable=as_json) as bar:
        task = bar.add_task("quantizing", total=total)

        def advance(name: str) -> None:
            bar.update(task, advance=1, description=f"quantizing {name}")

        req = QuantizeRequest(
            src, bits, group_size, not asym, method, qtype.lower() if qtype else None,
            alignment, advance, source_path=None if source.startswith("builtin") else source,
            per_tensor_bits=plan.per_tensor_bits if plan else None,
            per_tensor_group=plan.per_tensor_group if plan else None)
        facts = writer(req, out)
    facts["seconds"] = round(time.perf_counter() - started, 3)
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    extra = f", header {facts['header']}" if "header" in facts else ""
    bpw = facts.get("bits_per_weight")
    click.echo(f"wrote {facts['output']}{extra}: {facts.get('bytes', '?')} bytes"
               + (f", {bpw} bits/weight" if bpw is not None else ""))


def _find_tokenizer(model_spec: str, vocab: int, explicit: Path | None) -> TextCodec:
    from tinytelem.models.tokenizer import ByteTokenizer, load_tokenizer

    if explicit is not None:
        return load_tokenizer(explicit, vocab)
    if not model_spec.startswith("builtin"):
        folder = Path(model_spec).parent
        for name in (f"tok{vocab}.bin", "tokenizer.bin"):
            if (folder / name).is_file():
                return load_tokenizer(folder / name, vocab)
    if vocab >= 259:
        return ByteTokenizer(vocab)
    raise ConfigError(f"no tokenizer found for {model_spec}; pass --tokenizer tok{vocab}.bin")


def _steps(m: AnyModel, ids: list[int], steps: int, temperature: float, topp: float,
           seed: int) -> Iterator[Any]:
    from tinytelem.models.quant import QuantizedModel

    if isinstance(m, QuantizedModel):
        from tinytelem.models import qinfer

        return qinfer.generate_steps(m, ids, steps, temperature=temperature, topp=topp,
                                     seed=seed)
    from tinytelem.models import reference

    return reference.generate_steps(m, ids, steps, temperature=temperature, topp=topp,
                                    seed=seed)


@model.command("generate")
@click.argument("model_spec", metavar="MODEL")
@click.option("--tokenizer", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="llama2.c tokenizer (default: tok<vocab>.bin or tokenizer.bin beside MODEL).")
@click.option("--prompt", default="", help="Prompt text (BOS is prepended).")
@click.option("--steps", type=int, default=64, show_default=True,
              help="Positions including the prompt, like run.c's -n.")
@click.option("--temperature", type=float, default=0.0, show_default=True)
@click.option("--topp", type=float, default=0.9, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Add token ids and timing.")
def generate(model_spec: str, tokenizer: Path | None, prompt: str, steps: int,
             temperature: float, topp: float, seed: int, as_json: bool) -> None:
    """Generate text: float reference for llama2.c files, the integer engine for .tlm."""
    from tinytelem.models.quant import QuantizedModel
    from tinytelem.models.tokenizer import BOS

    m = load_model(model_spec)
    codec = _find_tokenizer(model_spec, m.config.vocab_size, tokenizer)
    prompt_ids = codec.encode(prompt, bos=True)
    ids = list(prompt_ids[:1])
    started = time.perf_counter()
    forwards = 0
    for step in _steps(m, prompt_ids, steps, temperature, topp, seed):
        forwards += 1
        if step.next == BOS:
            break
        ids.append(step.next)
    elapsed = time.perf_counter() - started
    text = codec.decode_all(ids)
    if not as_json:
        click.echo(text)
        return
    click.echo(json.dumps({
        "model": model_spec,
        "engine": "integer" if isinstance(m, QuantizedModel) else "float32-reference",
        "text": text, "prompt_ids": prompt_ids, "ids": ids, "forward_passes": forwards,
        "seconds": round(elapsed, 6),
        "ms_per_token": round(1000 * elapsed / max(1, forwards), 4),
    }, indent=2))


def describe(m: AnyModel, path: Path | None) -> dict[str, Any]:
    """The facts ``inspect`` shows (also useful to other model commands)."""
    from tinytelem.models.quant import QuantizedModel, QuantTensor
    from tinytelem.models.tlm import type_code, type_name

    c = m.config
    hist: dict[str, dict[str, int]] = {}
    if isinstance(m, QuantizedModel):
        for _name, t in m:
            key = type_name(type_code(t))
            entry = hist.setdefault(key, {"tensors": 0, "elements": 0})
            entry["tensors"] += 1
            entry["elements"] += t.shape[0] * t.shape[1] if isinstance(t, QuantTensor) \
                else int(t.size)
        params, bpw = m.param_count(), m.bits_per_weight()
        weight_bytes = m.weight_bytes()
    else:
        arrays = [a for k, a in vars(m.weights).items()
                  if k != "wcls" or not c.shared_classifier]
        params = sum(int(a.size) for a in arrays)
        hist["f32"] = {"tensors": len(arrays), "elements": params}
        bpw, weight_bytes = 32.0, 4 * params
    return {
        "model": str(path) if path else m.name, "name": m.name,
        "format": path.suffix.lstrip(".") if path else "builtin",
        "file_bytes": path.stat().st_size if path else None,
        "config": {"dim": c.dim, "hidden_dim": c.hidden_dim, "n_layers": c.n_layers,
                   "n_heads": c.n_heads, "n_kv_heads": c.n_kv_heads,
                   "vocab_size": c.vocab_size, "seq_len": c.seq_len,
                   "shared_classifier": c.shared_classifier},
        "params": params, "weight_bytes": weight_bytes, "bits_per_weight": round(bpw, 3),
        "types": hist,
    }


@model.command("inspect")
@click.argument("model_spec", metavar="MODEL")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect(model_spec: str, as_json: bool) -> None:
    """Show config, parameter count, per-type tensor histogram, bits/weight and file size."""
    m = load_model(model_spec)
    path = None if model_spec.startswith("builtin") else Path(model_spec)
    facts = describe(m, path)
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    cfg = ", ".join(f"{k}={v}" for k, v in facts["config"].items())
    console.print(f"[bold]{facts['model']}[/bold] ({facts['format']}"
                  + (f", {facts['file_bytes']:,} bytes" if facts["file_bytes"] else "") + ")")
    console.print(f"config: {cfg}")
    console.print(f"params: {facts['params']:,}   weights: {facts['weight_bytes']:,} bytes   "
                  f"bits/weight: {facts['bits_per_weight']}")
    table = Table("type", "tensors", "elements")
    for key, entry in sorted(facts["types"].items()):
        table.add_row(key, str(entry["tensors"]), f"{entry['elements']:,}")
    console.print(table)


# Part B's commands and formats (validate, eval, optimize, GGUF, ONNX); see the module docstring.
def _load_extensions() -> None:
    import importlib

    try:
        importlib.import_module("tinytelem.cli.model_b")
    except ModuleNotFoundError as exc:
        if exc.name != "tinytelem.cli.model_b":
            raise


_load_extensions()
