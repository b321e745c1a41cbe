"""Quantized inference with exactly the arithmetic the C firmware performs.

The point of this module is that host and device produce the same tokens *bit for bit*, so
every floating-point operation below has a fixed order that a C99 compiler reproduces with
``-ffp-contract=off`` and without ``-ffast-math`` (IEEE float32, round-to-nearest-even,
denormals kept). The contract, normative for the firmware (docs/quantization.md repeats it):

* **Sums** run sequentially from index 0 with a ``0.0f`` accumulator. numpy's ``sum`` is
  pairwise, so the host uses ``cumsum`` (sequential) along the reduction axis, vectorised over
  the other axes, and adds ``+0.0f`` (which only turns a ``-0.0`` result into ``+0.0``, as a
  C loop starting at ``0.0f`` would).
* **Quantized matmul** ``y = W x`` with W in groups of ``g`` columns: the input is quantized
  per group, ``amax = max|x|``, ``d = amax / 127.0f``, ``id = d != 0 ? 1.0f / d : 0.0f``,
  ``xq = clamp(rint(x * id), -127, 127)`` (round half to even; ``rintf`` or the
  ``(v + 12582912.0f) - 12582912.0f`` trick). Per row and group the int32 dot product
  ``isum = sum(xq * level)`` (``level = q`` or ``q - zero``) is exact in any order; the host
  computes it with float32 BLAS, which is exact too because ``|partial sums| < 2^24`` for
  group sizes <= 256. Then ``y[r] = sum over groups g in order of (float)isum * (d[g] *
  wscale[r][g])`` where ``wscale`` is the float16 scale widened to float32.
* **Float matrices** (kept at 16/32 bits): ``y[r] = sum over c in order of w[r][c] * x[c]``.
* **RMSNorm** (run.c): ``ss = sum(x*x); ss = ss / n; ss = ss + 1e-5f; ss = 1.0f / sqrtf(ss);
  o = w * (ss * x)``.
* **RoPE** from the float32 tables ``rope.cos/sin[pos][j]`` with ``j = (i % head_dim) / 2`` for
  the pair (i, i+1): ``a' = a*c - b*s; b' = a*s + b*c``; keys over kv_dim only.
* **Attention** per head: ``score[t] = dot(q, k_t) / sqrtf(head_dim)`` (dot sequential over
  head_dim), softmax, ``out[d] = sum over t in order of p[t] * v_t[d]``. The KV cache is float32.
* **Softmax**: ``m = max``; ``e = tt_expf(x - m)``; ``s = sum(e)``; ``p = e / s``.
* **SwiGLU**: ``h = (h1 * (1.0f / (1.0f + tt_expf(-h1)))) * h3``.
* **tt_expf** (libm's expf differs between C libraries, so we define our own): ``x < -86 -> 0``;
  ``x = min(x, 88)``; ``n = rint(x * LOG2E)``; ``r = (x - n*C1) - n*C2``; ``p = Horner(P0..P5,
  r)``; ``y = ((p * (r*r)) + r) + 1``; result ``y * 2^n`` with ``2^n`` built from its bits. The
  constants are those of Cephes' expf (below); accuracy ~1 ulp on the reduced range.
* **Embedding** rows are dequantized as ``(float)scale * (float)level``; the classifier is a
  matmul like the others (shared with the embedding when the model says so).
* Matrices whose stored width exceeds the input (group padding) see the input zero-extended.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt

from tinytelem.errors import ModelError
from tinytelem.models.qtensor import QuantTensor
from tinytelem.models.quant import QuantizedModel, Tensor
from tinytelem.models.reference import Sampler, Step, _sample_mult, _sample_topp

__all__ = ["ExactSampler", "QTransformer", "generate", "generate_steps", "matvec",
           "quantize_activation", "tt_expf", "tt_softmax"]

F32 = npt.NDArray[np.float32]
_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)
_EPS = np.float32(1e-5)
_127 = np.float32(127.0)

# Cephes expf constants (float32).
LOG2E = np.float32(1.44269504088896341)
C1 = np.float32(0.693359375)
C2 = np.float32(-2.12194440e-4)
P = tuple(np.float32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3,
                                  4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))
EXP_LO = np.float32(-86.0)
EXP_HI = np.float32(88.0)


def _seqsum(a: F32, axis: int = -1) -> F32:
    """Left-to-right float32 sum along ``axis`` (a C loop from 0.0f)."""
    out: F32 = np.cumsum(a, axis=axis, dtype=np.float32).take(-1, axis=axis) + _ZERO
    return out


def tt_expf(x: F32) -> F32:
    """The firmware's exp: identical bits on every platform (see the module docstring)."""
    x = np.asarray(x, dtype=np.float32)
    xc = np.minimum(x, EXP_HI)
    n = np.rint(xc * LOG2E)
    r = (xc - n * C1) - n * C2
    p = np.full_like(r, P[0])
    for c in P[1:]:
        p = p * r + c
    y = ((p * (r * r)) + r) + _ONE
    ni = np.clip(n, -126, 127).astype(np.int32)
    two_n = ((ni + 127) << 23).astype(np.int32).view(np.float32)
    out: F32 = np.where(x < EXP_LO, _ZERO, y * two_n).astype(np.float32)
    return out


def tt_softmax(x: F32) -> F32:
    """Softmax over the last axis in the firmware's order."""
    e = tt_expf(x - x.max(axis=-1, keepdims=True))
    s = _seqsum(e)
    out: F32 = e / s[..., None]
    return out


def quantize_activation(x: F32, group_size: int) -> tuple[F32, F32]:
    """int8 levels (held in float32) and float32 scales per group of ``x`` (firmware rule)."""
    xg = np.asarray(x, dtype=np.float32).reshape(-1, group_size)
    d = np.abs(xg).max(axis=1) / _127
    with np.errstate(divide="ignore"):
        inv = _ONE / d
    inv[d == 0] = _ZERO
    xq = np.rint(xg * inv[:, None])
    np.clip(xq, -127, 127, out=xq)
    return xq, d


class _Matrix:
    """A weight matrix prepared for the host: levels as float32 (exact), scales widened."""

    def __init__(self, t: Tensor) -> None:
        if isinstance(t, QuantTensor):
            rows, cols = t.shape
            self.group = t.group_size
            groups = cols // t.group_size
            lv = t.levels().astype(np.float32).reshape(rows, groups, t.group_size)
            self.levels: F32 = np.ascontiguousarray(lv.transpose(1, 0, 2))  # (G, rows, g)
            self.scales: F32 = t.scales.astype(np.float32)  # (rows, G)
            self.dense: F32 | None = None
        else:
            self.group = 0
            self.dense = np.asarray(t, dtype=np.float32)
            rows, cols = self.dense.shape
        self.rows, self.cols = rows, cols

    @staticmethod
    def fuse(parts: list[_Matrix]) -> _Matrix | None:
        """One matrix stacking ``parts`` row-wise (same input, same group size), else None.

        Every row is computed independently, so fusing q|k|v or w1|w3 changes no bit of the
        result; it only saves the host numpy calls (the firmware may do the same or not).
        """
        first = parts[0]
        if any(p.dense is not None or p.group != first.group or p.cols != first.cols
               for p in parts):
            return None
        fused = object.__new__(_Matrix)
        fused.group, fused.dense, fused.cols = first.group, None, first.cols
        fused.levels = np.ascontiguousarray(np.concatenate([p.levels for p in parts], axis=1))
        fused.scales = np.concatenate([p.scales for p in parts], axis=0)
        fused.rows = sum(p.rows for p in parts)
        return fused

    def row(self, i: int) -> F32:
        """One row as float32 (embedding lookup): ``(float)scale * (float)level``."""
        if self.dense is not None:
            dense: F32 = self.dense[i].copy()
            return dense
        s = np.repeat(self.scales[i], self.group)
        out: F32 = s * self.levels[:, i, :].reshape(-1)
        return out

    def __matmul__(self, x: F32) -> F32:
        return matvec(self, x)


def matvec(m: _Matrix, x: F32) -> F32:
    """``W x`` in the firmware's arithmetic (zero-extends ``x`` to the stored width)."""
    if x.shape[0] != m.cols:
        if x.shape[0] > m.cols:
            raise ModelError(f"input of {x.shape[0]} values for a matrix of {m.cols} columns")
        x = np.concatenate([x, np.zeros(m.cols - x.shape[0], dtype=np.float32)])
    if m.dense is not None:
        return _seqsum(m.dense * x[None, :], axis=1)
    xq, d = quantize_activation(x, m.group)
    isum = np.matmul(m.levels, xq[:, :, None])[:, :, 0]  # (G, rows), exact integers
    prod = isum.T * (d[None, :] * m.scales)  # (rows, G)
    return _seqsum(prod, axis=1)


def _rmsnorm(x: F32, w: F32) -> F32:
    ss = _seqsum(x * x) / np.float32(x.shape[-1])
    ss = _ONE / np.sqrt(ss + _EPS)
    out: F32 = w * (ss * x)
    return out


class QTransformer:
    """One sequence's quantized forward pass with its own float32 KV cache."""

    def __init__(self, qmodel: QuantizedModel) -> None:
        """Prepare the matrices of ``qmodel`` for the host (done once, like loading flash)."""
        self.model = qmodel
        c = self.config = qmodel.config
        t = qmodel.tensors
        try:
            self._emb = _Matrix(t["tok_embeddings"])
            self._cls = self._emb if c.shared_classifier else _Matrix(t["output"])
            self._layers = [
                {k: _Matrix(t[f"layers.{i}.{k}"])
                 for k in ("wq", "wk", "wv", "wo", "w1", "w2", "w3")}
                for i in range(c.n_layers)]
            self._fused: list[dict[tuple[str, ...], _Matrix | None]] = [
                {names: _Matrix.fuse([mats[n] for n in names])
                 for names in (("wq", "wk", "wv"), ("w1", "w3"))}
                for mats in self._layers]
            self._norms = [(np.asarray(t[f"layers.{i}.attention_norm"], dtype=np.float32),
                            np.asarray(t[f"layers.{i}.ffn_norm"], dtype=np.float32))
                           for i in range(c.n_layers)]
            self._final = np.asarray(t["norm"], dtype=np.float32)
            self._cos = np.asarray(t["rope.cos"], dtype=np.float32)
            self._sin = np.asarray(t["rope.sin"], dtype=np.float32)
        except KeyError as exc:
            raise ModelError(f"quantized model lacks tensor {exc}; re-export it") from exc
        hs = c.head_dim
        self._sqrt_hs = np.sqrt(np.float32(hs))
        shape = (c.n_layers, c.n_kv_heads, c.seq_len, hs)
        self.key_cache = np.zeros(shape, dtype=np.float32)
        self.value_cache = np.zeros(shape, dtype=np.float32)

    def reset(self) -> None:
        """Forget the sequence."""
        self.key_cache.fill(0.0)
        self.value_cache.fill(0.0)

    def _project(self, layer: int, names: tuple[str, ...], x: F32) -> list[F32]:
        """Several matmuls of one input, fused into one call when their layouts allow."""
        fused = self._fused[layer].get(names)
        if fused is None:
            return [self._layers[layer][n] @ x for n in names]
        y = fused @ x
        bounds = np.cumsum([self._layers[layer][n].rows for n in names])[:-1]
        return list(np.split(y, bounds))

    def _rope(self, v: F32, pos: int) -> F32:
        pairs = v.reshape(-1, self.config.head_dim // 2, 2)
        c, s = self._cos[pos], self._sin[pos]
        a, b = pairs[..., 0], pairs[..., 1]
        out: F32 = np.stack((a * c - b * s, a * s + b * c), axis=-1).reshape(-1)
        return out

    def forward(self, token: int, pos: int) -> F32:
        """Logits (float32, vocab_size) for ``token`` at ``pos`` (positions in order).

        Raises:
            ModelError: For a token or position outside the model's range.
        """
        c = self.config
        if not 0 <= token < c.vocab_size:
            raise ModelError(f"token {token} is outside the vocabulary (0..{c.vocab_size - 1})")
        if not 0 <= pos < c.seq_len:
            raise ModelError(f"position {pos} is outside the context (0..{c.seq_len - 1}); "
                             "start a new sequence or use a model with a longer seq_len")
        hs, n_kv = c.head_dim, c.n_kv_heads
        kv_mul = c.n_heads // n_kv
        t = pos + 1
        x = self._emb.row(token)[: c.dim]
        for layer, mats in enumerate(self._layers):
            att_norm, ffn_norm = self._norms[layer]
            xb = _rmsnorm(x, att_norm)
            q, k, v = self._project(layer, ("wq", "wk", "wv"), xb)
            q, k = self._rope(q, pos), self._rope(k, pos)
            kc, vc = self.key_cache[layer], self.value_cache[layer]
            kc[:, pos, :] = k.reshape(n_kv, hs)
            vc[:, pos, :] = v.reshape(n_kv, hs)
            qh = q.reshape(n_kv, kv_mul, 1, hs)
            scores = _seqsum(qh * kc[:, None, :t, :]) / self._sqrt_hs  # (n_kv, kv_mul, t)
            p = tt_softmax(scores)
            xb = _seqsum(p[..., None] * vc[:, None, :t, :], axis=2).reshape(c.dim)
            x = x + mats["wo"] @ xb
            xb = _rmsnorm(x, ffn_norm)
            h1, h3 = self._project(layer, ("w1", "w3"), xb)
            hb = (h1 * (_ONE / (_ONE + tt_expf(-h1)))) * h3
            x = x + mats["w2"] @ hb
        x = _rmsnorm(x, self._final)
        return self._cls @ x


class ExactSampler(Sampler):
    """run.c's sampler with the firmware's softmax, so temperature sampling matches the device.

    The C side must sort top-p candidates by probability descending with ties broken by the
    lower token id first (a stable sort), and draw with run.c's xorshift64*.
    """

    def sample(self, logits: F32) -> int:
        """The next token id (advances the RNG unless greedy)."""
        logits = np.asarray(logits, dtype=np.float32)[: self.vocab_size]
        if self.temperature == 0.0:
            return int(np.argmax(logits))
        probs = tt_softmax(logits / np.float32(self.temperature))
        from tinytelem.models.reference import random_f32

        coin, self.rng_state = random_f32(self.rng_state)
        if self.topp <= 0 or self.topp >= 1:
            return _sample_mult(probs, coin)
        return _sample_topp(probs, np.float32(self.topp), coin)


def generate_steps(model: QuantizedModel | QTransformer, prompt_ids: Sequence[int], steps: int,
                   *, temperature: float = 0.0, topp: float = 0.9, seed: int = 42,
                   ) -> Iterator[Step]:
    """run.c's loop on the quantized engine (same semantics as reference.generate_steps).

    Raises:
        ModelError: For an empty prompt.
    """
    from tinytelem.models.reference import run_loop

    tf = model if isinstance(model, QTransformer) else QTransformer(model)
    cfg = tf.config
    sampler = ExactSampler(cfg.vocab_size, temperature, topp, seed)
    return run_loop(tf.forward, sampler.sample, prompt_ids, steps, cfg.seq_len)


def generate(model: QuantizedModel | QTransformer, prompt_ids: Sequence[int], steps: int, *,
             temperature: float = 0.0, topp: float = 0.9, seed: int = 42) -> list[int]:
    """All ids of the sequence (first prompt id, then every id run.c would print)."""
    from tinytelem.models.reference import collect_ids

    return collect_ids(prompt_ids, generate_steps(model, prompt_ids, steps,
                                                  temperature=temperature, topp=topp, seed=seed))
