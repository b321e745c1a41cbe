"""llama.cpp (through llama-cpp-python) against our reference on our own GGUF files.

Run: ``python bench/llamacpp.py MODEL.bin --tokenizer tok512.bin [--tokens 2000] [--json]``
(needs ``pip install 'tinytelem[llamacpp]'``).

It writes MODEL as F32 and Q4_0 GGUF (tokenizer stored), then:

* greedy text for "Once upon a time" (100 tokens) from llama.cpp on the F32 file vs ours;
* next-token distributions over the shipped evaluation stories (``--tokens`` scored positions),
  each row against our float32 reference of MODEL: llama.cpp F32, llama.cpp Q4_0, and our float
  reference of the Q4_0 file (its weights dequantized: what the Q4_0 *weights* cost, without
  llama.cpp's 8-bit activation quantization in its Q4_0 dot products).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tinytelem.models.evaluate import (
    blas_single_thread,
    compare_logits,
    eval_texts,
    forward_sequence,
    render_eval_table,
    tokenize_texts,
)
from tinytelem.models.gguf_io import read_gguf, write_gguf
from tinytelem.models.llama2c import load_checkpoint
from tinytelem.models.reference import generate
from tinytelem.models.tokenizer import load_tokenizer

PROMPT = "Once upon a time"


def _llama(path: Path, ctx: int) -> Any:
    from llama_cpp import Llama

    return Llama(model_path=str(path), n_ctx=ctx, n_threads=1, logits_all=True, verbose=False)


def _logits(llm: Any, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def run(model_path: Path, tok_path: Path, tokens: int) -> dict[str, Any]:
    m = load_checkpoint(model_path)
    tok = load_tokenizer(tok_path, m.config.vocab_size)
    with tempfile.TemporaryDirectory() as tmp:
        f32, q4 = Path(tmp) / "f32.gguf", Path(tmp) / "q4_0.gguf"
        write_gguf(m, f32, "f32", tokenizer=tok)
        write_gguf(m, q4, "q4_0", tokenizer=tok)
        llm32, llm4 = _llama(f32, m.config.seq_len), _llama(q4, m.config.seq_len)
        ids = tok.encode(PROMPT)
        ours = generate(m, ids, len(ids) + 99)[len(ids):]
        theirs: list[int] = []
        for t in llm32.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0):
            if t in (llm32.token_bos(), llm32.token_eos()) or len(theirs) == len(ours):
                break
            theirs.append(t)
        seqs = tokenize_texts(tok, eval_texts(), m.config.seq_len, tokens)
        targets = [np.asarray(s[1:], dtype=np.int64) for s in seqs]
        q4_model = read_gguf(q4).model
        with blas_single_thread():
            ref = [forward_sequence(m, s) for s in seqs]
            rows = [("llama.cpp F32", [_logits(llm32, s) for s in seqs]),
                    ("llama.cpp Q4_0", [_logits(llm4, s) for s in seqs]),
                    ("ours Q4_0 (deq)", [forward_sequence(q4_model, s) for s in seqs])]
        results = [compare_logits(label, ref, lg, targets) for label, lg in rows]
    return {"greedy_identical": theirs == ours, "greedy_tokens": len(ours),
            "greedy_text": tok.decode_all([1, *theirs]),
            "results": [r.to_dict() for r in results], "table": render_eval_table(results)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--tokenizer", type=Path, required=True)
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = run(args.model, args.tokenizer, args.tokens)
    if args.json:
        print(json.dumps({k: v for k, v in out.items() if k != "table"}, indent=2))
        return
    print(f"greedy {out['greedy_tokens']} tokens identical: {out['greedy_identical']}")
    print(out["table"])


if __name__ == "__main__":
    main()
