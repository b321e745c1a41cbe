"""End to end: profile the device twin (a separate process) over TCP, the way users do.

The twin knows its ground truth (its cost model's timings and energy); the metrics computed
from the recorded trace must recover it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import trio

from tinytelem.emulator.schedule import RunTruth
from tinytelem.emulator.twin import TwinDevice
from tinytelem.models.formats import GENERATED_MODEL_BITS
from tinytelem.models.llama2c import builtin_model
from tinytelem.platforms import get_platform
from tinytelem.protocol.commands import Run
from tinytelem.session.options import ProfileOptions
from tinytelem.session.profile import ProfileResult, run_profile
from tinytelem.trace.reader import open_trace

pytestmark = pytest.mark.slow


def profile(tmp_path: Path, device: str, **kw: object) -> ProfileResult:
    options = ProfileOptions(device=device, out_dir=tmp_path / device.replace(":", "_"), **kw)

    async def main() -> ProfileResult:
        with trio.fail_after(120):
            return await run_profile(options)

    return trio.run(main)


def truth_for(platform: str, n_tokens: int, prompt: list[int]) -> RunTruth:
    """The twin's ground truth for the same run: a twin built in this process, same inputs.

    The twin is deterministic (its model, cost model and schedule depend only on these), so
    this is exactly what the twin process was configured to do.
    """
    # The generated model has no stored width: without --weight-bits the twin costs it at
    # GENERATED_MODEL_BITS (a model of that shape quantized for the board).
    twin = TwinDevice(get_platform(platform), builtin_model(42), seed=42,
                      weight_bits=GENERATED_MODEL_BITS)
    twin.start_run(Run(1, 42, 0.0, n_tokens, tuple(prompt)), 1.0)
    twin.advance(float("inf"))
    return twin.truths[1]


@pytest.mark.parametrize("platform", ["esp32s3", "stm32h7", "rp2040"])
def test_profile_recovers_twin_timings(tmp_path: Path, platform: str) -> None:
    result = profile(tmp_path, f"emu:{platform}", n_tokens=24)
    s = result.summary
    assert s["schema"] == "tinytelem.summary/1"
    assert s["tokens"]["generated"] == 24 and s["tokens"]["prompt"] == 17
    from tinytelem.models.tokenizer import ByteTokenizer

    prompt = ByteTokenizer().encode("Once upon a time", bos=True, eos=False)
    truth = truth_for(platform, 24, list(prompt))
    ttft = truth.ttft_s
    itl = np.asarray(truth.itl_s)
    assert s["latency"]["ttft_s"] == pytest.approx(ttft, rel=0.01)
    assert s["latency"]["itl_s"]["mean"] == pytest.approx(float(itl.mean()), rel=0.01)
    assert s["latency"]["itl_s"]["p99"] == pytest.approx(float(np.percentile(itl, 99)), rel=0.01)
    assert s["latency"]["e2e_s"] == pytest.approx(truth.end_s - truth.start_s, rel=0.01)
    assert s["power"]["energy_j"] == pytest.approx(truth.energy_j, rel=0.05)
    assert s["power"]["coverage"] == pytest.approx(1.0, abs=1e-6)
    # Net of the idle baseline: the work's own energy, with an uncertainty.
    net = s["power"]["net"]
    idle_w = get_platform(platform).idle_power_w
    assert net["baseline_w"] == pytest.approx(idle_w, rel=0.01)
    work = net["prefill_j"]["net"] + net["decode_j"]["net"]
    expected = truth.energy_j - idle_w * (truth.end_s - truth.start_s)
    assert work == pytest.approx(expected, rel=0.1)
    assert net["decode_j"]["u"] > 0 and net["per_token_j"]["n"] == 24
    assert s["memory"]["kv_bytes"] > 0 and s["memory"]["peak_arena_bytes"] > 0
    assert s["link"]["crc_errors"] == 0 and s["link"]["gaps"] == 0
    assert json.loads(result.summary_path.read_text()) == s
    with open_trace(result.trace_path) as tr:
        assert tr.attrs["platform"] == platform
        assert len(tr.tokens) == s["tokens"]["prompt"] + 24
        assert len(tr.spans) > 0
        assert tr.summary == s


def test_profile_real_model_text(tmp_path: Path, stories260k: Path, tok512: Path) -> None:
    result = profile(tmp_path, "emu:esp32s3", n_tokens=40, model=stories260k, tokenizer=tok512)
    assert result.text is not None
    assert result.text.startswith("Once upon a time, there was a little girl named Lily.")
    assert result.summary["model"]["name"]
    assert not math.isnan(result.summary["latency"]["ttft_s"])


def test_link_dropped_twice_run_completes(tmp_path: Path) -> None:
    """The twin drops the link twice mid-run: the session completes and records both gaps.

    An STM32F4 at 4 bits is predicted at about 6 ms per token, so both outages fall early in a
    ~2 s run.
    Frames the device sent while unplugged are gone, as on hardware: on a machine loaded
    enough to put the twin behind real time, that may even be the run's INFER_END, which the
    session then reports as lost instead of waiting for ever.
    """
    result = profile(tmp_path, "emu:stm32f4", n_tokens=280, weight_bits=4,
                     faults=["drop@30", "drop@80"])
    s, outcome = result.summary, result.outcome
    assert outcome.run_status == 0 or outcome.run_end_lost
    assert s["link"]["reconnects"] == 2
    assert s["link"]["gaps"] >= 2
    with open_trace(result.trace_path) as tr:
        gaps = tr.link_gaps
        assert len(gaps) == 2
        assert np.all(gaps["restored_host_s"] > gaps["lost_host_s"])
        tokens = tr.tokens
        # Device time stays monotonic across both outages (no spurious tick wraps).
        assert np.all(np.diff(tokens["ticks"].astype(np.int64)) > 0)
        assert tokens["device_s"][-1] - tokens["device_s"][0] < 60
        if outcome.run_status == 0:
            assert tr.runs["status"][0] == 0
            assert tr.runs["end_s"][0] - tr.runs["begin_s"][0] < 60


def test_profile_with_emulated_ppk2(tmp_path: Path) -> None:
    """--sensor ppk2:PORT runs the real PPK2 driver (here against the PPK2 emulator's pty)."""
    from tinytelem.sensors.ppk2_emulator import PPK2Emulator

    async def main() -> ProfileResult:
        emu = PPK2Emulator()
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                await nursery.start(emu.run)
                options = ProfileOptions(device="emu:stm32f4", out_dir=tmp_path / "ppk2",
                                         n_tokens=16, sensor=f"ppk2:{emu.path}")
                result = await run_profile(options)
                nursery.cancel_scope.cancel()
        return result

    result = trio.run(main)
    s = result.summary
    assert s["power"]["sample_rate_hz"] == pytest.approx(100_000)
    assert s["power"]["n_samples"] > 10_000
    assert s["power"]["avg_w"] > 0 and s["power"]["energy_per_token_j"] > 0
    with open_trace(result.trace_path) as tr:
        assert str(tr.attrs["sensor"]).startswith("ppk2:")
        assert tr.n_power_samples == s["power"]["n_samples"]
        assert tr.group_attrs("power")["sample_rate_hz"] == pytest.approx(100_000)


def test_unknown_sensor_is_refused_before_anything_starts(tmp_path: Path) -> None:
    from tinytelem.errors import ConfigError

    options = ProfileOptions(device="emu:esp32s3", out_dir=tmp_path / "x", sensor="ppk3:/dev/x")
    with pytest.raises(ConfigError):
        trio.run(run_profile, options)
    assert not (tmp_path / "x").exists()


def test_auto_sensor_choice(tmp_path: Path) -> None:
    from tinytelem.session.core import resolve_sensor

    assert resolve_sensor("auto", "emu:esp32s3") == "sim"
    assert resolve_sensor("auto", "tcp://127.0.0.1:1") == "none"
    assert resolve_sensor("ppk2:/dev/x", "emu:esp32s3") == "ppk2:/dev/x"
    # native: picks the RAPL package counter when one is readable (a fake sysfs tree here).
    assert resolve_sensor("auto", "native:", str(tmp_path)) == "none"
    rapl = tmp_path / "sys/class/powercap/intel-rapl:0"
    rapl.mkdir(parents=True)
    (rapl / "name").write_text("package-0\n")
    (rapl / "energy_uj").write_text("123456\n")
    (rapl / "max_energy_range_uj").write_text("262143328850\n")
    assert resolve_sensor("auto", "native:", str(tmp_path)) == "rapl:0-package-0"
