"""PPK2 decode throughput: numba vs numpy vs pure Python, same bytes, same run.

Decodes identical PPK2 sample words (ranges switching every 50 samples, so the spike filter
works) through :class:`tinytelem.sensors.ppk2_decode.PPK2Decoder` with each backend, in
blocks of 5000 words (50 ms at 100 kS/s, the live block size), and reports MS/s, ns/sample and
the share of one core that a real PPK2's 100 kS/s costs. Also checks the three agree.

    python bench/ppk2.py [--samples N] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from tinytelem.sensors.ppk2_decode import PPK2Decoder, PPK2Samples
from tinytelem.sensors.ppk2_emulator import EXAMPLE_METADATA
from tinytelem.sensors.ppk2_protocol import pack_words

BLOCK = 5000


def make_bytes(n: int) -> bytes:
    rng = np.random.default_rng(0)
    ranges = np.repeat(rng.integers(0, 5, n // 50 + 1), 50)[:n]
    return pack_words(rng.integers(0, 16384, n), ranges, np.arange(n),
                      rng.integers(0, 256, n)).tobytes()


def run(backend: str, data: bytes) -> tuple[float, np.ndarray]:
    dec = PPK2Decoder(EXAMPLE_METADATA, backend=backend)
    dec.warm_up()
    dec.receive_data(data[: 4 * 16])  # first call outside the timing
    dec = PPK2Decoder(EXAMPLE_METADATA, backend=backend)
    out = []
    step = 4 * BLOCK
    t0 = time.perf_counter()
    for i in range(0, len(data), step):
        out += [e.current_a for e in dec.receive_data(data[i : i + step])
                if isinstance(e, PPK2Samples)]
    dt = time.perf_counter() - t0
    return dt, np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=2_000_000)
    ap.add_argument("--python-samples", type=int, default=100_000,
                    help="fewer samples for the slow backends")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    data = make_bytes(args.samples)
    results = {}
    ref = None
    for backend in ("numba", "numpy", "python"):
        n = args.samples if backend == "numba" else min(args.samples, args.python_samples)
        dt, cur = run(backend, data[: 4 * n])
        if ref is None:
            ref = cur
        agree = bool(np.allclose(cur, ref[: cur.size], rtol=1e-6))
        results[backend] = {"samples": n, "seconds": dt, "msps": n / dt / 1e6,
                            "ns_per_sample": dt / n * 1e9,
                            "core_share_at_100ksps": 100_000 * dt / n, "agrees": agree}
    out = {"benchmark": "ppk2_decode", "block_samples": BLOCK, "results": results,
           "numba_vs_numpy": results["numba"]["msps"] / results["numpy"]["msps"],
           "numba_vs_python": results["numba"]["msps"] / results["python"]["msps"]}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for name, r in results.items():
        print(f"{name:>7}: {r['msps']:8.2f} MS/s  {r['ns_per_sample']:8.1f} ns/sample  "
              f"{100 * r['core_share_at_100ksps']:6.2f}% of a core at 100 kS/s  "
              f"agree={r['agrees']}")
    print(f"numba is {out['numba_vs_numpy']:.0f}x numpy and {out['numba_vs_python']:.0f}x "
          "pure Python")


if __name__ == "__main__":
    main()
