"""`encodec-hf evaluate` end to end on a tiny random model: Opus baseline, tables, JSON, plots, bad inputs."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import random_model, tiny_config
from test_evaluation_metrics import speech_like, with_noise

from encodec_hf import EncodecLM, EncodecLMConfig
from encodec_hf.cli import main
from encodec_hf.evaluation import evaluate, metrics, write_report
from encodec_hf.evaluation.opus import ogg_packet_sizes, opus_round_trip
from encodec_hf.evaluation.runner import lowpass, mean_interval

SR = 8000  # tiny_config's rate


@pytest.mark.parametrize("kbps", [6.0, 12.0, 24.0])
@pytest.mark.parametrize("channels", [1, 2])
def test_opus_real_bitrate_is_the_requested_one(kbps, channels):
    x = speech_like(seconds=3.0, sr=24_000).numpy().repeat(channels, axis=0)
    result = opus_round_trip(x, 24_000, kbps)
    assert result.audio.shape == x.shape and result.audio.dtype == np.float32
    assert abs(result.payload_kbps - kbps) <= 0.1 * kbps
    assert result.payload_kbps < result.file_kbps < result.payload_kbps + 3  # Ogg pages and the two headers
    # Decoded in time with the input (opusdec removes the pre-skip): a clearly positive SI-SNR at 24 kbps.
    if kbps == 24.0:
        assert float(metrics.si_snr(torch.from_numpy(result.audio), torch.from_numpy(x))) > 5


def test_ogg_packet_sizes_reads_lacing():
    def page(packets):
        lacing = b"".join(bytes([255] * (len(p) // 255) + [len(p) % 255]) for p in packets)
        return b"OggS" + bytes(22) + bytes([len(lacing)]) + lacing + b"".join(packets)

    data = page([b"a" * 3, b"b" * 300]) + page([b"c" * 255])
    assert ogg_packet_sizes(data) == [3, 300, 255]
    with pytest.raises(ValueError, match="Ogg page"):
        ogg_packet_sizes(b"junk" + data)


def test_lowpass_anchor_removes_high_frequencies():
    t = np.arange(SR * 24) / (SR * 3)
    low, high = np.sin(2 * np.pi * 1000 * t), np.sin(2 * np.pi * 6000 * t)
    out = lowpass((low + high)[None].astype(np.float32), SR * 3)
    assert np.abs(out[0, 2000:-2000] - low[2000:-2000]).max() < 0.02


def test_mean_interval_is_student_t():
    stat = mean_interval([1.0, 2.0, 3.0])
    assert stat["mean"] == 2.0 and stat["ci95"] == pytest.approx(4.302653 * 1 / np.sqrt(3), rel=1e-5)
    assert mean_interval([5.0]) == {"mean": 5.0, "ci95": None, "n": 1}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random model (.ecdc name borrowed from the 24 kHz codec) with a tiny random LM in its folder."""
    folder = tmp_path_factory.mktemp("tiny_model")
    config = tiny_config(ecdc_model_name="encodec_24khz")
    random_model(config).save_pretrained(folder)
    lm_config = EncodecLMConfig(
        num_codebooks=config.num_quantizers,
        codebook_size=config.codebook_size,
        dim=16,
        num_layers=1,
        num_heads=2,
        past_context=int(3.5 * config.frame_rate),
    )
    torch.manual_seed(0)
    EncodecLM(lm_config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    sf.write(folder / "a.wav", speech_like(seconds=1.6, sr=SR)[0].numpy(), SR)
    sf.write(folder / "b.wav", with_noise(speech_like(seconds=1.2, sr=SR, seed=4), 20.0)[0].numpy(), SR)
    return folder


def test_two_bandwidth_evaluation_writes_table_json_and_plots(model_dir, clips, tmp_path):
    result = evaluate([model_dir], inputs=[clips], bandwidths=[6.0, 12.0], max_seconds=1.5, progress=False)
    conditions = {c["condition"]: c for c in result.conditions}
    name = model_dir.name
    for bandwidth in ("6", "12"):
        plain, lm = conditions[f"{name} {bandwidth} kbps"], conditions[f"{name} {bandwidth} kbps +LM"]
        assert plain["kbps"]["mean"] == pytest.approx(float(bandwidth), rel=0.02)  # codes: 1000 frames/s x 6 bits
        assert lm["file_kbps"]["mean"] > 0 and lm["clips"] == plain["clips"] == 2
        assert lm["metrics"]["si_snr"]["mean"] == pytest.approx(plain["metrics"]["si_snr"]["mean"], abs=1e-3)
    for kbps in (6, 12, 24):
        assert f"Opus {kbps} kbps @ 8000 Hz" in conditions
    reference = conditions["reference (input) @ 8000 Hz"]["metrics"]
    assert reference["si_snr"]["mean"] > 60 and reference["mel_distance"]["mean"] == 0
    assert reference["visqol_audio"]["mean"] == pytest.approx(4.7321, abs=1e-3)
    assert any("cut from 1.60 s to 1.50 s" in note for note in result.notes)
    assert any("resampled 8000 -> 48000 Hz" in note for note in result.notes)
    assert not result.problems

    index = write_report(result, tmp_path / "report")
    report = index.parent
    assert f"| {name} 6 kbps |" in (report / "table.md").read_text()
    assert "## Notes" in index.read_text()
    data = json.loads((report / "results.json").read_text())
    assert data["schema_version"] == 1 and data["metrics"] == result.metrics
    assert len(data["rows"]) == 2 * len(data["conditions"])
    assert {"clip", "condition", "kbps", "metrics", "errors"} <= set(data["rows"][0])
    assert (report / "results.csv").read_text().splitlines()[0].startswith("condition,kind,system")
    pngs = sorted(report.glob("*.png"))
    names = {p.name for p in pngs}
    assert {f"{m}_vs_bitrate.png" for m in result.metrics} <= names
    assert {"spectrogram_6kbps.png", "spectrogram_12kbps.png", "spectrogram_24kbps.png"} <= names
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_bad_inputs_are_reported_and_the_run_goes_on(model_dir, clips, tmp_path):
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really audio")
    sf.write(tmp_path / "silent.wav", np.zeros(SR * 2, dtype=np.float32), SR)
    sf.write(tmp_path / "short.wav", speech_like(seconds=0.3, sr=SR)[0].numpy(), SR)
    inputs = [clips / "a.wav", tmp_path / "broken.wav", tmp_path / "silent.wav", tmp_path / "short.wav"]
    result = evaluate([model_dir], inputs=inputs, bandwidths=[6.0], lm="off", opus_kbps=[12.0], progress=False)
    problems = [p.to_dict() for p in result.problems]
    by_clip = {}
    for p in problems:
        by_clip.setdefault(p["clip"].rsplit("/", 1)[-1], []).append(p)
    assert "Cannot read this file as audio" in by_clip["broken.wav"][0]["message"]
    assert all("silent" in p["message"] for p in by_clip["silent.wav"] if p["metric"] == "si_snr")
    short = {p["metric"]: p["message"] for p in by_clip["short.wav"]}
    assert "at least 1.0 s" in short["visqol_audio"]
    assert "a.wav" not in by_clip
    # Everything that could be measured was: the good clip fully, the short one by its other metrics.
    rows = {(r.clip.rsplit("/", 1)[-1], r.condition): r for r in result.rows}
    good = rows[("a.wav", f"{model_dir.name} 6 kbps")]
    assert set(good.metrics) == set(result.metrics) and not good.errors
    assert "mel_distance" in rows[("short.wav", f"{model_dir.name} 6 kbps")].metrics


def test_no_readable_clip_is_a_clear_error(model_dir, tmp_path):
    (tmp_path / "broken.wav").write_bytes(b"nope")
    with pytest.raises(ValueError, match="No readable clip.*Cannot read"):
        evaluate([model_dir], inputs=[tmp_path / "broken.wav"], progress=False)
    with pytest.raises(ValueError, match="None of the bandwidths"):
        evaluate([model_dir], inputs=[tmp_path], bandwidths=[1.5], progress=False)


def test_dataset_input_and_worker_processes_give_the_same_numbers(model_dir, clips):
    from datasets import Audio, Dataset

    files = sorted(clips.glob("*.wav"))
    dataset = Dataset.from_dict({"audio": [{"bytes": f.read_bytes(), "path": f.name} for f in files]}).cast_column(
        "audio", Audio(decode=False)
    )
    kwargs = dict(bandwidths=[6.0], lm="off", opus_kbps=[6.0], content="speech", progress=False)
    here = evaluate([model_dir], dataset=dataset, **kwargs)
    spawned = evaluate([model_dir], inputs=files, workers=2, **kwargs)
    assert "stoi" in here.metrics and "visqol_speech" in here.metrics
    assert len(here.rows) == len(spawned.rows) == 2 * 4  # model, Opus, reference, low-pass per clip
    for a, b in zip(here.rows, spawned.rows, strict=True):
        assert a.condition == b.condition
        for metric, value in a.metrics.items():
            assert b.metrics[metric] == pytest.approx(value, rel=1e-4, abs=1e-4)


def test_cli_evaluate_prints_the_table_and_writes_the_report(model_dir, clips, tmp_path, capsys):
    status = main(
        ["evaluate", str(clips / "a.wav"), "--model", str(model_dir), "-b", "12", "--lm", "off", "--opus", "12"]
        + ["--report", str(tmp_path / "out"), "--json", str(tmp_path / "r.json")]
    )
    out, err = capsys.readouterr()
    assert status == 0
    assert f"| {model_dir.name} 12 kbps |" in out and "| Opus 12 kbps @ 8000 Hz |" in out
    assert "Report written to" in err and (tmp_path / "out" / "index.md").is_file()
    assert json.loads((tmp_path / "r.json").read_text())["settings"]["bandwidths"] == {model_dir.name: [12.0]}
    assert main(["evaluate", "--model", str(model_dir)]) == 1
    assert "Give audio files" in capsys.readouterr().err
