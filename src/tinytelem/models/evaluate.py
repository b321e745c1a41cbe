"""Accuracy of a (quantized) model against its float reference: llama.cpp's perplexity metrics.

For every scored position the reference and the candidate each give a next-token distribution
``p`` and ``q``; with ``t`` the token that actually follows in the text:

* **PPL** ``exp(mean(-log q[t]))`` (and the reference's, and ``ln(PPL_q / PPL_p)``);
* **KLD** ``sum p * (log p - log q)`` per position: mean, median, 99th percentile, max;
* **top-1** fraction of positions where ``argmax q == argmax p`` (llama.cpp's "same top p");
* **RMS Δp** ``sqrt(mean((q[t] - p[t])^2))``, as a percentage like llama.cpp prints it.

Unlike llama.cpp, which scores only the second half of fixed-size chunks of one long text, we
score every position of each story (each story starts with BOS): the evaluation texts are short
stories, and a tiny model's context is the story itself.

The float models run through :func:`forward_sequence`, a batched (whole-sequence, causal)
version of the reference forward pass: the same arithmetic as ``Transformer.forward`` up to
float32 summation order, ~50x faster in numpy for stories260K. Quantized ``.tlm`` models run
through the integer engine (``tinytelem.models.qinfer``) one token at a time when it is there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from tinytelem.errors import ModelError
from tinytelem.models.llama2c import LlamaModel
from tinytelem.models.tokenizer import TextCodec

__all__ = [
    "EvalResult",
    "StepModel",
    "blas_single_thread",
    "compare_logits",
    "eval_texts",
    "evaluate",
    "forward_sequence",
    "log_softmax",
    "render_eval_table",
    "sequence_logits",
    "tokenize_texts",
]

F32 = npt.NDArray[np.float32]
_EPS = np.float32(1e-5)


@contextmanager
def blas_single_thread() -> Iterator[None]:
    """Run the enclosed numpy work with one BLAS thread.

    Our matrices are tiny (64 x 172): OpenBLAS's threads cost more than they save, and on a
    busy 2-core machine they made ``forward_sequence`` 50x slower (0.4 s instead of 8 ms for
    96 tokens). Uses threadpoolctl when it is installed; otherwise does nothing.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional dependency
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


class StepModel(Protocol):
    """Anything that runs one token at a time like ``reference.Transformer``."""

    def forward(self, token: int, pos: int) -> F32: ...

    def reset(self) -> None: ...


def _rmsnorm_rows(x: F32, w: F32) -> F32:
    ss = (x * x).mean(axis=1, keepdims=True, dtype=np.float32) + _EPS
    out: F32 = (x * (np.float32(1.0) / np.sqrt(ss))) * w
    return out


def forward_sequence(model: LlamaModel, ids: Sequence[int]) -> F32:
    """Logits (T, vocab) for every position of ``ids`` at once (causal attention).

    Raises:
        ModelError: For a token outside the vocabulary or a sequence longer than seq_len.
    """
    c, w = model.config, model.weights
    tok = np.asarray(ids, dtype=np.int64)
    t = tok.shape[0]
    if t == 0:
        return np.zeros((0, c.vocab_size), dtype=np.float32)
    if t > c.seq_len:
        raise ModelError(f"sequence of {t} tokens exceeds the context ({c.seq_len}); split the "
                         "text into shorter pieces")
    if tok.min() < 0 or tok.max() >= c.vocab_size:
        raise ModelError(f"token ids must be in 0..{c.vocab_size - 1}; is the tokenizer the "
                         "model's own?")
    hs, n_kv, kv_mul = c.head_dim, c.n_kv_heads, c.n_heads // c.n_kv_heads
    freq = (np.float32(1.0) / np.power(np.float32(10000.0), (
        np.arange(0, c.dim, 2) % hs).astype(np.float32) / np.float32(hs))).astype(np.float32)
    angle = np.arange(t, dtype=np.float32)[:, None] * freq[None, :]  # (T, dim/2)
    cos, sin = np.cos(angle), np.sin(angle)
    kvh = c.kv_dim // 2
    mask = np.triu(np.full((t, t), -np.inf, dtype=np.float32), k=1)
    scale = np.float32(math.sqrt(hs))
    x = w.token_embedding[tok].astype(np.float32)

    def rope(v: F32, cs: F32, sn: F32) -> F32:
        p = v.reshape(t, -1, 2)
        a, b = p[..., 0], p[..., 1]
        out: F32 = np.stack((a * cs - b * sn, a * sn + b * cs), axis=-1).reshape(t, -1)
        return out

    for layer in range(c.n_layers):
        xb = _rmsnorm_rows(x, w.rms_att[layer])
        q = rope(xb @ w.wq[layer].T, cos, sin)
        k = rope(xb @ w.wk[layer].T, cos[:, :kvh], sin[:, :kvh])
        v = xb @ w.wv[layer].T
        qh = q.reshape(t, n_kv, kv_mul, hs).transpose(1, 2, 0, 3)  # (kv, mul, T, hs)
        kh = k.reshape(t, n_kv, hs).transpose(1, 0, 2)[:, None]  # (kv, 1, T, hs)
        vh = v.reshape(t, n_kv, hs).transpose(1, 0, 2)[:, None]
        att = (qh @ kh.transpose(0, 1, 3, 2)) / scale + mask
        att = np.exp(att - att.max(axis=-1, keepdims=True))
        att /= att.sum(axis=-1, keepdims=True)
        o = (att @ vh).transpose(2, 0, 1, 3).reshape(t, c.dim)
        x = x + o @ w.wo[layer].T
        xb = _rmsnorm_rows(x, w.rms_ffn[layer])
        h1 = xb @ w.w1[layer].T
        h3 = xb @ w.w3[layer].T
        x = x + (h1 * (np.float32(1.0) / (np.float32(1.0) + np.exp(-h1))) * h3) @ w.w2[layer].T
    x = _rmsnorm_rows(x, w.rms_final)
    logits: F32 = (x @ w.wcls.T).astype(np.float32)
    return logits


def sequence_logits(model: LlamaModel | StepModel, ids: Sequence[int]) -> F32:
    """Logits for every position, batched for float models, token by token otherwise."""
    if isinstance(model, LlamaModel):
        return forward_sequence(model, ids)
    model.reset()
    return np.stack([np.asarray(model.forward(int(tk), pos), dtype=np.float32)
                     for pos, tk in enumerate(ids)])


def log_softmax(x: F32) -> npt.NDArray[np.float64]:
    """Log-probabilities over the last axis, in float64 so tiny KLDs do not vanish."""
    z = x.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    out: npt.NDArray[np.float64] = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return out


@dataclass(frozen=True)
class EvalResult:
    """One candidate's metrics against the reference (see the module docstring)."""

    label: str
    tokens: int
    ppl: float
    ppl_ref: float
    ln_ppl_ratio: float
    kld_mean: float
    kld_median: float
    kld_p99: float
    kld_max: float
    top1: float
    rms_dp: float
    bits_per_weight: float | None = None
    weight_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with stable keys."""
        return asdict(self)


def compare_logits(label: str, ref: Sequence[F32], cand: Sequence[F32],
                   targets: Sequence[npt.NDArray[np.int64]], *,
                   bits_per_weight: float | None = None,
                   weight_bytes: int | None = None) -> EvalResult:
    """Metrics from per-sequence logits (T_i, vocab) and the tokens that followed (T_i,).

    Raises:
        ModelError: When nothing was scored.
    """
    kl_all, nll_q, nll_p, dp, same = [], [], [], [], []
    for lp_raw, lq_raw, tgt in zip(ref, cand, targets, strict=True):
        n = tgt.shape[0]
        lp, lq = log_softmax(lp_raw[:n]), log_softmax(lq_raw[:n])
        p = np.exp(lp)
        kl_all.append(np.maximum((p * (lp - lq)).sum(axis=1), 0.0))
        rows = np.arange(n)
        nll_q.append(-lq[rows, tgt])
        nll_p.append(-lp[rows, tgt])
        dp.append(np.exp(lq[rows, tgt]) - p[rows, tgt])
        same.append(lp_raw[:n].argmax(axis=1) == lq_raw[:n].argmax(axis=1))
    if not kl_all or sum(k.size for k in kl_all) == 0:
        raise ModelError("no tokens to score; the evaluation text is empty")
    kl = np.concatenate(kl_all)
    mq, mp = float(np.concatenate(nll_q).mean()), float(np.concatenate(nll_p).mean())
    return EvalResult(
        label=label, tokens=int(kl.size), ppl=math.exp(mq), ppl_ref=math.exp(mp),
        ln_ppl_ratio=mq - mp, kld_mean=float(kl.mean()), kld_median=float(np.median(kl)),
        kld_p99=float(np.percentile(kl, 99)), kld_max=float(kl.max()),
        top1=float(np.concatenate(same).mean()),
        rms_dp=float(np.sqrt((np.concatenate(dp) ** 2).mean())),
        bits_per_weight=bits_per_weight, weight_bytes=weight_bytes)


def eval_texts(path: str | Path | None = None) -> list[str]:
    """The shipped evaluation stories (one per file), or the user's text split on blank lines.

    Raises:
        ModelError: When the file cannot be read or holds no text.
    """
    if path is None:
        root = resources.files("tinytelem.models") / "data"
        texts = [f.read_text(encoding="utf-8").strip() for f in sorted(
            root.iterdir(), key=lambda f: f.name) if f.name.endswith(".txt")]
    else:
        try:
            raw = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelError(f"cannot read evaluation text {path}: {exc}; pass a UTF-8 file"
                             ) from exc
        texts = [" ".join(part.split()) for part in raw.split("\n\n")]
    texts = [t for t in texts if t]
    if not texts:
        raise ModelError(f"no evaluation text in {path or 'the package data'}")
    return texts


def tokenize_texts(codec: TextCodec, texts: Sequence[str], seq_len: int,
                   max_tokens: int | None = None) -> list[list[int]]:
    """BOS + tokens per text, cut to the context; stops once ``max_tokens`` are collected."""
    out: list[list[int]] = []
    total = 0
    for text in texts:
        ids = codec.encode(text, bos=True)[:seq_len]
        if max_tokens is not None:
            ids = ids[: max(0, max_tokens - total) + 1]
        if len(ids) < 2:
            break
        out.append(ids)
        total += len(ids) - 1
    return out


def evaluate(reference: LlamaModel, candidates: Sequence[tuple[str, Any]],
             sequences: Sequence[Sequence[int]], *,
             sizes: dict[str, tuple[float, int]] | None = None,
             progress: Callable[[str], None] | None = None) -> list[EvalResult]:
    """Score each candidate (a LlamaModel or a step model) against the float reference.

    Args:
        reference: The float model whose distributions count as truth.
        candidates: (label, model) pairs.
        sequences: Token ids, each starting with BOS; position i predicts token i+1.
        sizes: Optional label -> (bits per weight, weight bytes) for the table.
        progress: Called with each label before it runs.
    """
    with blas_single_thread():
        ref_logits = [forward_sequence(reference, s) for s in sequences]
        targets = [np.asarray(s[1:], dtype=np.int64) for s in sequences]
        results = []
        for label, cand in candidates:
            if progress is not None:
                progress(label)
            logits = [sequence_logits(cand, s) for s in sequences]
            bpw, nbytes = (sizes or {}).get(label, (None, None))
            results.append(compare_logits(label, ref_logits, logits, targets,
                                          bits_per_weight=bpw, weight_bytes=nbytes))
    return results


def render_eval_table(results: Sequence[EvalResult]) -> str:
    """A fixed-width table (one row per candidate), the layout docs/accuracy.md shows."""
    head = (f"{'model':<18} {'bits/w':>6} {'PPL':>8} {'ln(PPL/ref)':>11} {'KLD mean':>9} "
            f"{'median':>8} {'p99':>8} {'max':>8} {'top-1':>7} {'RMS dp':>7}")
    lines = [head, "-" * len(head)]
    for r in results:
        bpw = f"{r.bits_per_weight:.2f}" if r.bits_per_weight is not None else "-"
        lines.append(
            f"{r.label:<18} {bpw:>6} {r.ppl:>8.3f} {r.ln_ppl_ratio:>11.4f} {r.kld_mean:>9.5f} "
            f"{r.kld_median:>8.5f} {r.kld_p99:>8.4f} {r.kld_max:>8.4f} {100 * r.top1:>6.2f}% "
            f"{100 * r.rms_dp:>6.2f}%")
    if results:
        lines.append(f"reference PPL {results[0].ppl_ref:.3f} over {results[0].tokens} tokens")
    return "\n".join(lines)
