"""`make demo` (python -m encodec_hf.demo): runs on a local checkpoint and fails in one clear line offline."""

from __future__ import annotations

import pytest
import soundfile as sf
from conftest import tiny_config

from encodec_hf import EncodecModel, demo


def test_demo_encodes_and_decodes_the_bundled_clip(tmp_path, capsys):
    EncodecModel(tiny_config()).save_pretrained(tmp_path / "model")
    out = tmp_path / "decoded.wav"
    assert demo.main(["--model", str(tmp_path / "model"), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    for label in ("bandwidth", "SI-SNR", "real time", "wrote"):
        assert label in printed
    info = sf.info(out)
    assert (info.samplerate, info.channels, info.frames) == (8000, 1, 4 * 8000)  # resampled from 24 kHz


def test_demo_asked_for_a_hub_model_without_hub_or_cache_says_so_in_one_line(monkeypatch, capsys):
    from encodec_hf.errors import HubUnreachableError
    from encodec_hf.integrations import hub

    monkeypatch.setattr(hub, "hub_unreachable_reason", lambda: "ConnectError: [Errno 111] Connection refused")
    monkeypatch.setattr(hub, "is_cached", lambda *args, **kwargs: False)
    with pytest.raises(HubUnreachableError):  # what the demo reports
        hub.load_model("facebook/encodec_24khz")
    assert demo.main(["--model", "facebook/encodec_24khz"]) == 1  # asked for by name: no fallback
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: Cannot load 'facebook/encodec_24khz'")
    assert "MODEL=PATH" in err[0] and "does not answer" in err[0]


@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_demo_on_a_wrong_path_says_so_at_once(tmp_path, capsys, kind):
    path = tmp_path / "model"
    if kind == "empty":
        path.mkdir()
    assert demo.main(["--model", str(path)]) == 1
    err = capsys.readouterr().err
    expected = "does not exist" if kind == "missing" else "is empty"
    assert err.startswith(f"error: Model folder {path} {expected}") and err.count("\n") == 1
    assert "unreachable" not in err and "does not answer" not in err  # a mistyped path is not a Hub problem


def _make_dry_run(target: str, venv) -> list[str]:
    """The commands `make TARGET` would run on a fresh clone (-n: print only; -B: as if nothing were built)."""
    import shutil
    import subprocess
    from pathlib import Path

    make = shutil.which("make")
    assert make is not None, "the README's targets need GNU make"
    root = Path(__file__).resolve().parents[1]
    command = [make, "-n", "-B", "-C", str(root), target, f"VENV={venv}"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if " pip install " in line]


@pytest.mark.parametrize(("target", "extra"), [("install", []), ("demo", ['-e ".[demo]"'])])
def test_make_demo_installs_the_runtime_only(tmp_path, target, extra):
    """torch pinned first, then the package and its install_requires (and ViSQOL for the demo, where it builds):
    never the test extras or Meta's CC-BY-NC `encodec` (those come with `make test`, `lint`, `bench` and `eval`)."""
    installs = _make_dry_run(target, tmp_path / "venv")
    commands = [line.split(" install -q ")[-1].split(" || ")[0] for line in installs]
    assert commands == ["--upgrade pip", "torch==2.13.0", "-e ."] + extra


@pytest.mark.parametrize("target", ["test", "lint", "bench", "eval"])
def test_make_test_installs_the_test_extras_and_the_reference(tmp_path, target):
    installs = _make_dry_run(target, tmp_path / "venv")
    assert [line.split(" install -q ")[-1] for line in installs] == [
        "--upgrade pip",
        "torch==2.13.0",
        "-e .",
        '-e ".[test]"',
        "--no-deps encodec==0.1.1",
    ]
