"""Hugging Face checkpoint folders of ``LlamaForCausalLM``, in and out.

A folder is ``config.json`` + ``model.safetensors`` (or shards listed by
``model.safetensors.index.json``) + a tokenizer (``tokenizer.json`` or SentencePiece
``tokenizer.model``; see :mod:`tinytelem.models.hf_tokenizer`). Tensors are read with the
``safetensors`` package's numpy API (BF16, which numpy has no type for, is widened from its raw
bytes), named through :mod:`tinytelem.models.names`.

RoPE layout: HF checkpoints hold q/k rows in "rotate-half" order. ``transformers``' conversion
from Meta weights permutes each head's rows ``w.view(n_heads, head_dim // 2, 2, dim)
.transpose(1, 2)``; reading undoes it (:func:`~tinytelem.models.gguf_io.hf_to_meta`, with
``n_kv_heads`` for k under grouped-query attention) and writing applies it, so the float
reference (adjacent pairs, like run.c) gives the same logits either way.

Supported: RMSNorm, RoPE base 10000 over the whole head, SiLU-gated MLP, grouped-query attention,
tied or untied embeddings, no biases, no RoPE scaling; anything else is one ``ModelError`` line
naming the key and what is supported.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from tinytelem.errors import ModelError
from tinytelem.models import names
from tinytelem.models.gguf_io import (
    TensorInfo,
    hf_to_meta,
    meta_to_hf,
    model_from_tensors,
    tensor_items,
)
from tinytelem.models.hf_tokenizer import _need, load_any_tokenizer
from tinytelem.models.llama2c import LlamaConfig, LlamaModel

if TYPE_CHECKING:
    from tinytelem.models.tokenizer import TextCodec

__all__ = ["SUPPORTED", "HfFolder", "is_hf_folder", "read_hf", "write_hf"]

F32 = npt.NDArray[np.float32]
SUPPORTED: Final = "LlamaForCausalLM"
_SUPPORTED_LINE: Final = (f"tinytelem reads {SUPPORTED} checkpoints (model_type 'llama': "
                          "RMSNorm, RoPE base 10000, SiLU MLP, no biases)")
_INDEX: Final = "model.safetensors.index.json"
_DTYPES: Final = {"F32": "f32", "F16": "f16", "BF16": "bf16"}


@dataclass
class HfFolder:
    """What :func:`read_hf` found."""

    model: LlamaModel
    tensors: list[TensorInfo]
    tokenizer: TextCodec | None
    config: dict[str, Any]
    files: list[str] = field(default_factory=list)  # names read, in order
    notes: list[str] = field(default_factory=list)


def is_hf_folder(path: Path) -> bool:
    """A folder holding ``config.json``."""
    return path.is_dir() and (path / "config.json").is_file()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is not valid JSON ({exc}); the checkpoint is damaged") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path} holds {type(data).__name__}, not a JSON object")
    return data


def _config(cfg: dict[str, Any], src: str) -> tuple[LlamaConfig, list[str]]:
    archs = cfg.get("architectures") or []
    if archs != [SUPPORTED] or cfg.get("model_type", "llama") != "llama":
        got = ", ".join(map(str, archs)) or f"model_type {cfg.get('model_type')!r}"
        raise ModelError(f"{src}: architecture {got} is not supported; {_SUPPORTED_LINE}")

    def num(key: str, default: Any = None) -> int:
        v = cfg.get(key, default)
        if not isinstance(v, int) or isinstance(v, bool):
            raise ModelError(f"{src}: {key} is {v!r}, not an integer; the config is incomplete")
        return v

    for key, want in (("hidden_act", "silu"), ("rope_scaling", None),
                      ("attention_bias", False), ("mlp_bias", False)):
        if cfg.get(key, want) != want:
            raise ModelError(f"{src}: {key} = {cfg[key]!r} is not supported (needs {want!r}); "
                             f"{_SUPPORTED_LINE}")
    theta = float(cfg.get("rope_theta", 10000.0))
    if abs(theta - 10000.0) > 1e-3:
        raise ModelError(f"{src}: rope_theta = {theta:g} is not supported; {_SUPPORTED_LINE}")
    heads = num("num_attention_heads")
    c = LlamaConfig(dim=num("hidden_size"), hidden_dim=num("intermediate_size"),
                    n_layers=num("num_hidden_layers"), n_heads=heads,
                    n_kv_heads=num("num_key_value_heads", heads), vocab_size=num("vocab_size"),
                    seq_len=num("max_position_embeddings"),
                    shared_classifier=bool(cfg.get("tie_word_embeddings", False)))
    c.check(src)
    if cfg.get("head_dim", c.head_dim) != c.head_dim:
        raise ModelError(f"{src}: head_dim = {cfg['head_dim']} differs from hidden_size / "
                         f"num_attention_heads = {c.head_dim}; {_SUPPORTED_LINE}")
    notes = []
    eps = float(cfg.get("rms_norm_eps", 1e-5))
    if abs(eps - 1e-5) > 1e-9:
        notes.append(f"rms_norm_eps {eps:g} differs from the reference's 1e-5")
    return c, notes


def _shards(folder: Path) -> list[Path]:
    index = folder / _INDEX
    if index.is_file():
        wmap = _read_json(index).get("weight_map")
        if not isinstance(wmap, dict) or not wmap:
            raise ModelError(f"{index}: no 'weight_map'; the index is damaged")
        return [folder / f for f in sorted(set(map(str, wmap.values())))]
    single = folder / "model.safetensors"
    found = [single] if single.is_file() else sorted(folder.glob("*.safetensors"))
    if not found:
        raise ModelError(f"{folder}: no model.safetensors (or {_INDEX}); tinytelem reads "
                         "safetensors weights only (convert a pytorch_model.bin with "
                         "transformers' save_pretrained(safe_serialization=True))")
    return found


def _bf16(path: Path, name: str) -> F32:
    """A BF16 tensor widened to float32 from its raw bytes (numpy has no bfloat16)."""
    with path.open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        entry = json.loads(fh.read(n))[name]
        start, end = entry["data_offsets"]
        fh.seek(8 + n + start)
        raw = np.frombuffer(fh.read(end - start), dtype="<u2")
    wide: F32 = (raw.astype(np.uint32) << 16).view(np.float32).reshape(entry["shape"])
    return wide


def _read_shard(path: Path, out: dict[str, F32], infos: dict[str, TensorInfo]) -> None:
    st = _need("safetensors")
    try:
        with st.safe_open(str(path), framework="numpy") as fh:
            for key in fh.keys():  # noqa: SIM118 - safe_open is not a Mapping
                sl = fh.get_slice(key)
                dtype, shape = str(sl.get_dtype()), tuple(int(d) for d in sl.get_shape())
                if dtype not in _DTYPES:
                    raise ModelError(f"{path}: tensor {key} has dtype {dtype}; tinytelem reads "
                                     "F32, F16 and BF16 safetensors")
                arr = _bf16(path, key) if dtype == "BF16" else fh.get_tensor(key)
                out[key] = np.asarray(arr, dtype=np.float32)
                size = np.dtype(np.float32).itemsize if dtype == "F32" else 2
                infos[key] = TensorInfo(key, shape, _DTYPES[dtype], size * int(np.prod(shape)))
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ModelError:
        raise
    except Exception as exc:  # SafetensorError derives from Exception only
        raise ModelError(f"{path}: damaged safetensors file ({exc}); re-download or re-save "
                         "the checkpoint") from exc


def _tokenizer(folder: Path, vocab: int, files: list[str]) -> TextCodec | None:
    """``tokenizer.model`` (exact pieces and scores, storable in GGUF) before
    ``tokenizer.json``."""
    for fname in ("tokenizer.model", "tokenizer.json"):
        if (folder / fname).is_file():
            files.append(fname)
            return load_any_tokenizer(folder / fname, vocab)
    return None


def read_hf(folder: str | Path) -> HfFolder:
    """Read a ``LlamaForCausalLM`` checkpoint folder into the float model.

    Raises:
        ModelError: Unsupported architecture or option, damaged files, missing or mis-shaped
            tensors, or a tokenizer that does not fit the model.
    """
    root = Path(folder)
    cfg_path = root / "config.json"
    raw = _read_json(cfg_path)
    config, notes = _config(raw, str(cfg_path))
    files = ["config.json"]
    arrays: dict[str, F32] = {}
    stored: dict[str, TensorInfo] = {}
    for shard in _shards(root):
        _read_shard(shard, arrays, stored)
        files.append(shard.name)
    if not config.shared_classifier and "lm_head.weight" not in arrays:
        config = replace(config, shared_classifier=True)
        notes.append("no lm_head.weight: the classifier is tied to the embedding")
    by_hf = {names.hf_name(g): g for g in names.gguf_names(config)}
    canon: dict[str, F32] = {}
    infos: list[TensorInfo] = []
    for hf, g in by_hf.items():
        if hf not in arrays:
            raise ModelError(f"{root}: tensor {hf} is missing; the checkpoint is incomplete")
        a = arrays[hf]
        if ".attn_q." in g or ".attn_k." in g:
            heads = config.n_heads if ".attn_q." in g else config.n_kv_heads
            a = hf_to_meta(a, heads) if a.ndim == 2 and a.shape[0] % (2 * heads) == 0 else a
        canon[g] = a
        infos.append(TensorInfo(g, stored[hf].shape, stored[hf].qtype, stored[hf].nbytes))
    extra = sorted(set(arrays) - set(by_hf) - {"lm_head.weight"})
    if extra:
        notes.append(f"ignored {len(extra)} tensors not in a llama decoder: {', '.join(extra[:3])}")
    model = model_from_tensors(config, canon, name=str(raw.get("_name_or_path") or root.name),
                               source=str(root))
    tok = _tokenizer(root, config.vocab_size, files)
    return HfFolder(model, infos, tok, raw, files, notes)


def write_hf(model: LlamaModel, folder: str | Path, tokenizer: TextCodec | None = None
             ) -> dict[str, Any]:
    """Write ``model`` as a ``LlamaForCausalLM`` folder: ``config.json``,
    ``model.safetensors`` (float32, q/k rows in HF order) and, for a llama2.c vocabulary or a
    ``tokenizer.json`` read earlier, ``tokenizer.json`` + ``tokenizer_config.json`` (byte
    tokens of a generated model are not a vocabulary and are not written).

    Returns:
        Facts to print (output, files, bytes, tokenizer written).

    Raises:
        ModelError: The folder cannot be written, or the tokenizer cannot be stored.
    """
    from tinytelem.models.hf_tokenizer import HfTokenizer, tokenizer_json
    from tinytelem.models.tokenizer import Tokenizer

    st = _need("safetensors.numpy")
    root = Path(folder)
    c = model.config
    config = {
        "architectures": [SUPPORTED], "model_type": "llama", "hidden_size": c.dim,
        "intermediate_size": c.hidden_dim, "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads, "num_key_value_heads": c.n_kv_heads,
        "head_dim": c.head_dim, "vocab_size": c.vocab_size,
        "max_position_embeddings": c.seq_len, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "rope_scaling": None, "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
        "tie_word_embeddings": c.shared_classifier, "bos_token_id": 1, "eos_token_id": 2,  # nosec B105
        "torch_dtype": "float32", "_name_or_path": model.name,
    }
    tensors: dict[str, F32] = {}
    for g, arr in tensor_items(model).items():
        rope = ".attn_q." in g or ".attn_k." in g
        a = meta_to_hf(arr, c.n_heads if ".attn_q." in g else c.n_kv_heads) if rope else arr
        tensors[names.hf_name(g)] = np.ascontiguousarray(a, dtype=np.float32)
    text = (tokenizer_json(tokenizer) if isinstance(tokenizer, Tokenizer) else
            str(tokenizer.tk.to_str()) if isinstance(tokenizer, HfTokenizer) else None)
    try:
        root.mkdir(parents=True, exist_ok=True)
        (root / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        st.save_file(tensors, str(root / "model.safetensors"), metadata={"format": "pt"})
        files = ["config.json", "model.safetensors"]
        if text is not None:
            (root / "tokenizer.json").write_text(text, encoding="utf-8")
            tk_cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>",  # nosec B105
                      "eos_token": "</s>", "unk_token": "<unk>",  # nosec B105
                      "model_max_length": c.seq_len}
            (root / "tokenizer_config.json").write_text(json.dumps(tk_cfg, indent=2) + "\n",
                                                        encoding="utf-8")
            files += ["tokenizer.json", "tokenizer_config.json"]
    except OSError as exc:
        raise ModelError(f"cannot write {root}: {exc.strerror or exc}") from exc
    size = sum((root / f).stat().st_size for f in files)
    return {"output": str(root), "format": "hf", "files": files, "bytes": size,
            "tokenizer": text is not None}
