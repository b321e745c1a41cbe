"""The device twin's token loop: the firmware's run loop, one step at a time.

:class:`RunStream` splits each step into the forward pass (:meth:`RunStream.compute`, which
touches only the run's own engine and sampler, so a server may run it in a worker thread) and
its layout on the device's timeline (:meth:`RunStream.commit`). A ``.tlm`` runs on the integer
reference (``models.qinfer``, the firmware's arithmetic and sampler), so the twin's token ids
equal the firmware's; float models (llama2.c, GGUF, ONNX, generated) on the float reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from tinytelem.emulator.schedule import RunLayout, RunPlan
from tinytelem.models.llama2c import LlamaModel
from tinytelem.models.quant import QuantizedModel
from tinytelem.models.reference import Sampler, Transformer
from tinytelem.protocol.commands import Run

__all__ = ["BOS", "TOPP", "Engine", "PreparedRun", "RunStream", "TwinModel", "make_sampler",
           "reference_engine"]

BOS = 1
"""llama2.c's beginning-of-sequence id: an empty prompt means [BOS]; sampling it ends a run."""

TOPP = 0.9
"""Top-p of temperature sampling (llama2.c's default; RUN carries no top-p)."""


class Engine(Protocol):
    """A forward pass with its own KV cache (``tinytelem.models.reference.Transformer``)."""

    def forward(self, token: int, pos: int) -> Any: ...


TwinModel = LlamaModel | QuantizedModel
"""What the twin runs: float weights (llama2.c, GGUF, ONNX, generated) through the float
reference, or a ``.tlm``'s integer model through the integer reference (``models.qinfer``), the
arithmetic the firmware runs, so the twin's token ids equal the firmware's."""


@dataclass(frozen=True)
class PreparedRun:
    """A checked RUN with its engine and sampler (see :meth:`TwinDevice.prepare_run`)."""

    run: Run
    prompt: tuple[int, ...]
    n: int
    """Tokens it may generate: RUN's n_tokens clipped to the context, as the firmware does."""
    engine: Engine
    sampler: Sampler


class RunStream:
    """One run's token loop, one step at a time: the firmware's loop, split so that the
    forward pass (:meth:`compute`, which touches only this run's engine and sampler, so it may
    run in a worker thread) and the layout (:meth:`commit`, the device's state) alternate.

    Step ``i < len(prompt)`` is prompt token ``i``; later steps sample generated token
    ``j = i - len(prompt)``, after a forward pass of the previous one when ``j > 0``.
    """

    def __init__(self, prep: PreparedRun, layout: RunLayout | None) -> None:
        self.prep = prep
        self.prompt = prep.prompt
        self.layout = layout
        self.run_id = prep.run.run_id
        self.step = 0
        self.finished = False
        """No more steps: all laid out, or stopped."""
        self.final: RunPlan | None = None
        self._logits: Any = None
        self._last = BOS
        self._check_end()

    def compute(self) -> int:
        """The token of the next step: a prompt id (after its forward pass) or a sample."""
        i, n_prompt = self.step, len(self.prompt)
        engine = self.prep.engine
        if i < n_prompt:
            self._logits = engine.forward(self.prompt[i], i)
            return self.prompt[i]
        j = i - n_prompt
        if j > 0:
            self._logits = engine.forward(self._last, n_prompt - 1 + j)
        return int(self.prep.sampler.sample(self._logits))

    def commit(self, value: int) -> None:
        """Lay out the step :meth:`compute` just computed."""
        i, n_prompt, lay = self.step, len(self.prompt), self.layout
        self.step += 1
        if i < n_prompt:
            if lay is not None:
                lay.prefill(i, value)
        elif value == BOS:  # llama2.c stops when the model samples BOS
            if lay is not None:
                lay.decode(i - n_prompt, None)
            self._end()
            return
        else:
            self._last = value
            if lay is not None:
                lay.decode(i - n_prompt, value)
        self._check_end()

    def _check_end(self) -> None:
        if self.step >= len(self.prompt) + self.prep.n:
            self._end()

    def _end(self) -> None:
        self.finished = True
        if self.layout is not None:
            self.layout.finish()


def reference_engine(model: TwinModel) -> Engine:
    """A fresh forward-pass engine for ``model``: integer for a quantized model, else float."""
    if isinstance(model, QuantizedModel):
        from tinytelem.models.qinfer import QTransformer

        qengine: Engine = QTransformer(model)
        return qengine
    engine: Engine = Transformer(model)
    return engine


def make_sampler(model: TwinModel, temperature: float, seed: int) -> Sampler:
    """run.c's sampler; for a quantized model the firmware's exact one."""
    if isinstance(model, QuantizedModel):
        from tinytelem.models.qinfer import ExactSampler

        return ExactSampler(model.config.vocab_size, temperature, TOPP, seed)
    return Sampler(model.config.vocab_size, temperature, TOPP, seed)
