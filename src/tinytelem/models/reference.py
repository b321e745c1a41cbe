"""float32 numpy reference of llama2.c's run.c: forward pass, sampler and generation loop.

This is the yardstick the firmware and the device twin are checked against, so it follows
run.c's arithmetic order where that order is visible in the result: RMSNorm as
``x * (1 / sqrt(mean(x*x) + 1e-5)) * w``, RoPE rotating adjacent pairs (i, i+1) with the
frequency taken from ``i % head_size``, grouped-query attention, SwiGLU, and a sampler driven by
run.c's xorshift generator so a seed gives the same tokens as the C program.

Matrix products are vectorised (one BLAS call per projection), so float32 sums happen in a
different order than C's loops; greedy decoding of stories260K is unaffected (tested).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tinytelem.errors import ConfigError, ModelError
from tinytelem.models.llama2c import LlamaModel
from tinytelem.models.tokenizer import BOS

__all__ = ["Sampler", "Step", "Transformer", "generate", "generate_steps", "random_f32",
           "random_u32", "softmax"]

F32 = npt.NDArray[np.float32]
_EPS = np.float32(1e-5)
_MASK64 = (1 << 64) - 1


def _rmsnorm(x: F32, w: F32) -> F32:
    ss = np.float32(np.dot(x, x) / np.float32(x.shape[0])) + _EPS
    out: F32 = (x * (np.float32(1.0) / np.sqrt(ss))) * w
    return out


def softmax(x: F32) -> F32:
    """Softmax over the last axis, max-subtracted like run.c."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    out: F32 = e / e.sum(axis=-1, keepdims=True)
    return out


class Transformer:
    """One sequence's forward pass with its own KV cache (like run.c's Transformer struct)."""

    def __init__(self, model: LlamaModel) -> None:
        """Prepare fused weights and an empty KV cache for ``model``."""
        self.model = model
        c = model.config
        w = model.weights
        self._c = c
        # Fusing q|k|v and w1|w3 keeps each row's dot product intact but halves numpy calls.
        self._wqkv = np.ascontiguousarray(np.concatenate([w.wq, w.wk, w.wv], axis=1))
        self._w13 = np.ascontiguousarray(np.concatenate([w.w1, w.w3], axis=1))
        self._w = w
        hs = c.head_dim
        head_index = np.arange(0, c.dim, 2) % hs
        self._freq = (np.float32(1.0) / np.power(
            np.float32(10000.0), head_index.astype(np.float32) / np.float32(hs))
        ).astype(np.float32)
        self._scale = np.float32(math.sqrt(hs))
        shape = (c.n_layers, c.n_kv_heads, c.seq_len, hs)
        self.key_cache = np.zeros(shape, dtype=np.float32)
        self.value_cache = np.zeros(shape, dtype=np.float32)

    def reset(self) -> None:
        """Forget the sequence (the cache contents beyond pos are never read, but be tidy)."""
        self.key_cache.fill(0.0)
        self.value_cache.fill(0.0)

    def forward(self, token: int, pos: int) -> F32:
        """Logits (float32, vocab_size) for ``token`` at position ``pos``.

        Positions must be fed in order 0, 1, 2, ... (each call writes the cache row ``pos``).

        Raises:
            ModelError: For a token or position outside the model's range.
        """
        c, w = self._c, self._w
        if not 0 <= token < c.vocab_size:
            raise ModelError(f"token {token} is outside the vocabulary (0..{c.vocab_size - 1})")
        if not 0 <= pos < c.seq_len:
            raise ModelError(f"position {pos} is outside the context (0..{c.seq_len - 1}); "
                             "start a new sequence or use a model with a longer seq_len")
        dim, kv_dim, hs = c.dim, c.kv_dim, c.head_dim
        n_kv, kv_mul = c.n_kv_heads, c.n_heads // c.n_kv_heads
        angle = np.float32(pos) * self._freq
        fcr, fci = np.cos(angle), np.sin(angle)
        fcr_k, fci_k = fcr[: kv_dim // 2], fci[: kv_dim // 2]
        x = w.token_embedding[token].astype(np.float32, copy=True)
        t = pos + 1
        for layer in range(c.n_layers):
            xb = _rmsnorm(x, w.rms_att[layer])
            qkv = self._wqkv[layer] @ xb
            q = qkv[:dim].reshape(-1, 2)
            k = qkv[dim : dim + kv_dim].reshape(-1, 2)
            v = qkv[dim + kv_dim :]
            q0, q1 = q[:, 0], q[:, 1]
            q = np.stack((q0 * fcr - q1 * fci, q0 * fci + q1 * fcr), axis=1)
            k0, k1 = k[:, 0], k[:, 1]
            k = np.stack((k0 * fcr_k - k1 * fci_k, k0 * fci_k + k1 * fcr_k), axis=1)
            kc = self.key_cache[layer]
            vc = self.value_cache[layer]
            kc[:, pos, :] = k.reshape(n_kv, hs)
            vc[:, pos, :] = v.reshape(n_kv, hs)
            qh = q.reshape(n_kv, kv_mul, hs)
            att = (qh @ kc[:, :t, :].transpose(0, 2, 1)) / self._scale  # (n_kv, kv_mul, t)
            att = softmax(att)
            xb = (att @ vc[:, :t, :]).reshape(dim)
            x = x + w.wo[layer] @ xb
            xb = _rmsnorm(x, w.rms_ffn[layer])
            h = self._w13[layer] @ xb
            h1, h3 = h[: c.hidden_dim], h[c.hidden_dim :]
            hb = h1 * (np.float32(1.0) / (np.float32(1.0) + np.exp(-h1))) * h3
            x = x + w.w2[layer] @ hb
        x = _rmsnorm(x, w.rms_final)
        logits: F32 = w.wcls @ x
        return logits


def random_u32(state: int) -> tuple[int, int]:
    """run.c's xorshift64* step: returns (value, new_state)."""
    state ^= state >> 12
    state ^= (state << 25) & _MASK64
    state ^= state >> 27
    return ((state * 0x2545F4914F6CDD1D) & _MASK64) >> 32, state


def random_f32(state: int) -> tuple[float, int]:
    """run.c's random float in [0, 1) with 24 bits: returns (value, new_state)."""
    u, state = random_u32(state)
    return float(np.float32(u >> 8) / np.float32(16777216.0)), state


class Sampler:
    """Picks the next token like run.c: argmax at temperature 0, else multinomial or top-p."""

    def __init__(self, vocab_size: int, temperature: float = 0.0, topp: float = 0.9,
                 seed: int = 42) -> None:
        """Set up the sampler.

        Raises:
            ConfigError: For a negative temperature or a seed the xorshift cannot use.
        """
        if temperature < 0 or not math.isfinite(temperature):
            raise ConfigError(f"temperature must be >= 0, got {temperature}")
        if not 0 < seed <= _MASK64:
            raise ConfigError(f"seed must be in 1..2**64-1 (xorshift state 0 never changes), "
                              f"got {seed}")
        self.vocab_size = vocab_size
        self.temperature = temperature
        self.topp = topp
        self.rng_state = seed

    def sample(self, logits: F32) -> int:
        """The next token id for these logits (advances the RNG unless greedy)."""
        logits = np.asarray(logits, dtype=np.float32)[: self.vocab_size]
        if self.temperature == 0.0:
            return int(np.argmax(logits))  # first maximum, like run.c's strict '>'
        probs = softmax(logits / np.float32(self.temperature))
        coin, self.rng_state = random_f32(self.rng_state)
        if self.topp <= 0 or self.topp >= 1:
            return _sample_mult(probs, coin)
        return _sample_topp(probs, np.float32(self.topp), coin)


def _sample_mult(probs: F32, coin: float) -> int:
    cdf = np.cumsum(probs, dtype=np.float32)  # sequential float32, as run.c accumulates
    hits = np.nonzero(np.float32(coin) < cdf)[0]
    return int(hits[0]) if hits.size else probs.shape[0] - 1


def _sample_topp(probs: F32, topp: np.float32, coin: float) -> int:
    n = probs.shape[0]
    cutoff = (np.float32(1.0) - topp) / np.float32(n - 1)
    idx = np.nonzero(probs >= cutoff)[0]
    order = idx[np.argsort(-probs[idx], kind="stable")]
    sorted_p = probs[order]
    cum = np.cumsum(sorted_p, dtype=np.float32)
    over = np.nonzero(cum > topp)[0]
    last = int(over[0]) if over.size else order.shape[0] - 1
    r = np.float32(coin) * cum[last]
    hits = np.nonzero(r < cum[: last + 1])[0]
    return int(order[hits[0]]) if hits.size else int(order[last])


@dataclass(frozen=True)
class Step:
    """One iteration of run.c's loop: ``token`` went in at ``pos``, ``next`` came out."""

    pos: int
    token: int
    next: int
    forced: bool  # next came from the prompt, not the sampler


def generate_steps(model: LlamaModel | Transformer, prompt_ids: Sequence[int], steps: int, *,
                   temperature: float = 0.0, topp: float = 0.9, seed: int = 42,
                   ) -> Iterator[Step]:
    """run.c's generate() loop, one Step per forward pass.

    ``steps`` counts positions including the prompt (0 or more than seq_len means seq_len);
    the loop stops early when BOS is produced, and that final Step is still yielded so a caller
    can account for its forward pass.

    Raises:
        ModelError: For an empty prompt.
    """
    tf = model if isinstance(model, Transformer) else Transformer(model)
    cfg = tf.model.config
    sampler = Sampler(cfg.vocab_size, temperature, topp, seed)
    return run_loop(tf.forward, sampler.sample, prompt_ids, steps, cfg.seq_len)


def run_loop(forward: Callable[[int, int], np.ndarray], sample: Callable[[np.ndarray], int],
             prompt_ids: Sequence[int], steps: int, seq_len: int) -> Iterator[Step]:
    """run.c's generate() loop over any engine's ``forward(token, pos) -> logits``.

    Shared by the float reference and the integer engine so both follow run.c identically.

    Raises:
        ModelError: For an empty prompt.
    """
    if not prompt_ids:
        raise ModelError("generation needs at least one prompt token (BOS); encode with bos=True")
    if steps <= 0 or steps > seq_len:
        steps = seq_len
    return _loop(forward, sample, list(prompt_ids), steps)


def _loop(forward: Callable[[int, int], np.ndarray], sample: Callable[[np.ndarray], int],
          prompt_ids: list[int], steps: int) -> Iterator[Step]:
    token = prompt_ids[0]
    for pos in range(steps):
        logits = forward(token, pos)
        forced = pos < len(prompt_ids) - 1
        nxt = prompt_ids[pos + 1] if forced else sample(logits)
        yield Step(pos, token, nxt, forced)
        if nxt == BOS:
            return
        token = nxt


def collect_ids(prompt_ids: Sequence[int], steps: Iterable[Step]) -> list[int]:
    """The first prompt id followed by every id run.c would print (the stopping BOS left out)."""
    ids = list(prompt_ids[:1])
    for step in steps:
        if step.next == BOS:
            break
        ids.append(step.next)
    return ids


def generate(model: LlamaModel | Transformer, prompt_ids: Sequence[int], steps: int, *,
             temperature: float = 0.0, topp: float = 0.9, seed: int = 42) -> list[int]:
    """All ids of the sequence: the first prompt id followed by every id run.c would print.

    The stopping BOS is not included, so ``tokenizer.decode_all(result)`` is run.c's text.
    """
    return collect_ids(prompt_ids, generate_steps(model, prompt_ids, steps,
                                                  temperature=temperature, topp=topp, seed=seed))
