"""The `encodec-hf` command line, run in-process on a converted random-weight 24 kHz model."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from reference_encodec import ConvertedPair

from encodec_hf import cli, errors
from encodec_hf.audio_io import convert_audio, load_audio
from encodec_hf.ecdc import container as ecdc
from encodec_hf.integrations import hub


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return ConvertedPair("encodec_24khz", tmp_path_factory.mktemp("cli"))


@pytest.fixture
def wav(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "in.wav"
    sf.write(path, (0.1 * rng.standard_normal((4410, 2))).astype(np.float32), 44100, subtype="PCM_16")
    return path


def test_compress_matches_library_and_reports_conversion(pair, wav, tmp_path, capsys):
    out = tmp_path / "out.ecdc"
    assert cli.main(["compress", str(wav), str(out), "--model", str(pair.folder), "-b", "3"]) == 0
    err = capsys.readouterr().err
    assert "Resampling from 44100 Hz to 24000 Hz" in err and "Converting 2 channel(s) to 1" in err
    audio, sr = load_audio(wav)
    expected = ecdc.compress(pair.model, convert_audio(audio, sr, 24000, 1), bandwidth=3.0)
    assert out.read_bytes() == expected


@pytest.mark.parametrize("use_lm", [False, True])
def test_auto_mode_round_trip(pair, wav, tmp_path, use_lm):
    out = tmp_path / "x.ecdc"
    args = [str(wav), str(out), "--model", str(pair.folder)] + (["--lm"] if use_lm else [])
    assert cli.main(args) == 0
    assert ecdc.read_header(out.read_bytes())[0].use_lm is use_lm
    assert cli.main([str(out), "--model", str(pair.folder)]) == 0  # default output name, as the original
    decoded, sr = sf.read(tmp_path / "x_decompressed.wav", always_2d=True)
    assert sr == 24000 and decoded.shape == (2400, 1)
    # python -m encodec_hf decompress gives the same file as the library
    audio, _ = ecdc.decompress(out.read_bytes(), model=pair.model)
    assert np.abs(decoded[:, 0] - audio[0].clamp(-0.99, 0.99).numpy()).max() <= 1 / 32767 + 1e-6


def test_wav_output_round_trip_in_memory(pair, wav, tmp_path):
    assert cli.main(["compress", str(wav), str(tmp_path / "rt.wav"), "--model", str(pair.folder), "-r"]) == 0
    assert sf.info(tmp_path / "rt.wav").samplerate == 24000


def test_refuses_overwrite_without_force(pair, wav, tmp_path, capsys):
    out = tmp_path / "o.ecdc"
    out.write_bytes(b"keep me")
    assert cli.main(["compress", str(wav), str(out), "--model", str(pair.folder)]) == 1
    assert "Use -f / --force to overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert cli.main(["compress", str(wav), str(out), "--model", str(pair.folder), "-f"]) == 0
    assert out.read_bytes()[:4] == b"ECDC"


def test_failure_leaves_nothing_behind(pair, tmp_path, capsys):
    corrupt = tmp_path / "bad.ecdc"
    corrupt.write_bytes(ecdc.EcdcHeader("encodec_24khz", 24000, 8, False).to_bytes() + b"\x00" * 10)
    out = tmp_path / "bad.wav"
    assert cli.main(["decompress", str(corrupt), str(out), "--model", str(pair.folder)]) == 1
    assert "need at least" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.ecdc"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["compress", "{tmp}/missing.wav"], "Input file"),
        (["compress", "{wav}", "{tmp}/out.mp4"], "Output extension must be .wav or .ecdc"),
        (["compress", "{wav}", "{tmp}/nope/out.ecdc"], "Output folder"),
        (["compress", "{wav}", "{tmp}/o.ecdc", "-b", "5"], "Bandwidth 5 is not supported by the model encodec_24khz"),
        (["decompress", "{wav}", "{tmp}/o.txt"], "Output extension must be .wav"),
        (["decompress", "{wav}", "{tmp}/o.wav"], "Not an .ecdc file"),
        (["compress", "{tmp}/text.wav", "{tmp}/o.ecdc"], "Cannot read"),
    ],
)
def test_clear_errors(pair, wav, tmp_path, capsys, args, message):
    (tmp_path / "text.wav").write_text("not audio")
    args = [a.format(tmp=tmp_path, wav=wav) for a in args] + ["--model", str(pair.folder)]
    assert cli.main(args) == 1
    assert message in capsys.readouterr().err


def test_progress_bar_on_long_inputs(pair, wav, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "PROGRESS_MIN_FRAMES", 1)
    assert cli.main(["compress", str(wav), str(tmp_path / "p.ecdc"), "--model", str(pair.folder)]) == 0
    err = capsys.readouterr().err
    assert "compress" in err and "frame" in err  # tqdm's bar, on stderr


def test_dispatch_table_accepts_new_subcommands(monkeypatch, capsys):
    calls = []

    def add(parser):
        parser.add_argument("--name")

    def run(args):
        calls.append(args.name)
        return 0

    monkeypatch.setitem(cli.SUBCOMMANDS, "hello", cli.Subcommand("say hello", add, run))
    assert cli.main(["hello", "--name", "x"]) == 0
    assert calls == ["x"]
    assert cli.main([]) == 2


def test_python_dash_m_entry_point():
    import os

    import encodec_hf

    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(encodec_hf.__file__))}
    command = [sys.executable, "-m", "encodec_hf", "compress", "--help"]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == 0 and "--bandwidth" in result.stdout and "--lm" in result.stdout


def test_input_tensor_helpers_are_consistent():
    audio = torch.randn(2, 100)
    assert torch.equal(convert_audio(audio, 24000, 24000, 2), audio)
    assert torch.allclose(convert_audio(audio, 24000, 24000, 1), audio.mean(0, keepdim=True))


@pytest.mark.parametrize("command", ["encode-dataset", "serve"])
def test_delegated_subcommands_are_wired(command, capsys):
    from encodec_hf.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"encodec-hf {command}" in capsys.readouterr().out


def _failing_load_model(exc: Exception):
    def load_model(*args, **kwargs):
        raise exc

    return load_model


@pytest.mark.parametrize("exc", [ValueError("bug: bad stride"), TypeError("bug: None"), RuntimeError("bug: shape")])
def test_internal_failure_is_not_reported_as_bad_input(wav, tmp_path, capsys, monkeypatch, exc):
    """A bug (even a plain ValueError) is an internal error: its own exit status and wording, traceback on -v."""
    monkeypatch.setattr(hub, "load_model", _failing_load_model(exc))
    args = ["compress", str(wav), str(tmp_path / "o.ecdc")]
    assert cli.main(args) == cli.EXIT_INTERNAL_ERROR
    err = capsys.readouterr().err
    assert "internal error" in err and f"{type(exc).__name__}: {exc}" in err and "please report" in err
    assert "Traceback" not in err and "-v / --verbose" in err
    for verbose in (["-v", *args], [*args, "--verbose"]):  # before or after the subcommand
        assert cli.main(verbose) == cli.EXIT_INTERNAL_ERROR
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and "load_model" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]  # nothing half-written


@pytest.mark.parametrize(
    "exc",
    [
        errors.CheckpointMismatchError("weights do not fit config.json"),
        errors.MissingLMError("no LM weights in the folder"),
        errors.UnsupportedBandwidthError("Select one of 1.5, 3"),
        FileNotFoundError("model folder /nope does not exist"),
    ],
)
def test_documented_user_errors_print_one_error_line(wav, tmp_path, capsys, monkeypatch, exc):
    monkeypatch.setattr(hub, "load_model", _failing_load_model(exc))
    assert cli.main(["-v", "compress", str(wav), str(tmp_path / "o.ecdc")]) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.strip() == f"error: {exc}"  # no traceback, even with -v: the message names the problem


def test_front_end_internal_failure(monkeypatch, capsys):
    def broken(args):
        raise KeyError("bug")

    monkeypatch.setitem(cli.SUBCOMMANDS, "serve", cli.Subcommand("serve", lambda p: p.add_argument("--port"), broken))
    assert cli.main(["serve", "--port", "0"]) == cli.EXIT_INTERNAL_ERROR
    assert "internal error: KeyError" in capsys.readouterr().err
    assert cli.main(["-v", "serve"]) == cli.EXIT_INTERNAL_ERROR
    assert "Traceback" in capsys.readouterr().err


def test_unreadable_audio_is_a_documented_user_error(tmp_path):
    (tmp_path / "text.wav").write_text("not audio")
    with pytest.raises(errors.AudioFileError, match="Cannot read"):
        load_audio(tmp_path / "text.wav")


HEAVY_MODULES = ("torch", "transformers", "numpy", "datasets", "soundfile", "huggingface_hub")
HELP_SCRIPT = """
import sys
from encodec_hf import cli
for argv in (["--help"], ["--version"], *([name, "--help"] for name in cli.SUBCOMMANDS)):
    try:
        cli.main(argv)
    except SystemExit as exit:
        assert exit.code == 0, argv
print(sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[1:])))
"""


def test_help_and_version_answer_without_torch():
    """`encodec-hf --help`, `--version` and every subcommand's `--help` import only the standard library."""
    import os

    env = {**os.environ, "PYTHONPATH": str(cli.Path(cli.__file__).parents[1])}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "encodec_hf", "--help"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0 and "encode-dataset" in result.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert "encodec_hf" in imported and not imported & set(HEAVY_MODULES)
    result = subprocess.run(
        [sys.executable, "-c", HELP_SCRIPT, *HEAVY_MODULES], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_a_mistyped_model_folder_is_reported_before_torch_loads(tmp_path, command):
    import os

    source = tmp_path / ("in.wav" if command == "compress" else "in.ecdc")
    source.write_bytes(b"not read: the model path is checked first")
    env = {**os.environ, "PYTHONPATH": str(cli.Path(cli.__file__).parents[1])}
    missing = tmp_path / "no_such_model"
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "encodec_hf", command, str(source), "--model", str(missing)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 1
    assert f"error: Model folder {missing} does not exist" in result.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert not imported & set(HEAVY_MODULES)


def test_version(capsys):
    import encodec_hf

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out == f"encodec-hf {encodec_hf.__version__}\n"


def test_parser_constants_match_their_modules(capsys):
    """The parsers keep literal copies (no heavy import for --help); they must agree with the modules'."""
    from encodec_hf.integrations import encode_dataset, endpoint

    assert cli.SHARD_FORMATS == encode_dataset.SHARD_FORMATS
    assert cli.SERVE_MAX_BODY_MB * 2**20 == endpoint.DEFAULT_MAX_BODY_BYTES
    assert cli.SERVE_MAX_QUEUE == endpoint.DEFAULT_MAX_QUEUE
    with pytest.raises(SystemExit):
        cli.main(["decompress", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "default: the one the file's header names, facebook/encodec_24khz or facebook/encodec_48khz" in help_text


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_outputs_keep_the_umask(pair, wav, tmp_path, umask, mode):
    """Written under a temporary name and renamed, the outputs still get 0o666 minus the umask, as open() does."""
    import os
    import stat

    previous = os.umask(umask)
    try:
        assert cli.main(["compress", str(wav), str(tmp_path / "o.ecdc"), "--model", str(pair.folder)]) == 0
        assert (
            cli.main(["decompress", str(tmp_path / "o.ecdc"), str(tmp_path / "o.wav"), "--model", str(pair.folder)])
            == 0
        )
        assert cli.main(["compress", str(wav), str(tmp_path / "rt.flac"), "--model", str(pair.folder)]) == 0
    finally:
        os.umask(previous)
    for name in ("o.ecdc", "o.wav", "rt.flac"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


@pytest.mark.parametrize("command, kind", [("compress", "audio file"), ("decompress", ".ecdc file")])
def test_a_directory_as_input_says_so(pair, tmp_path, capsys, command, kind):
    assert cli.main([command, str(tmp_path), "--model", str(pair.folder)]) == cli.EXIT_USER_ERROR
    assert capsys.readouterr().err == f"error: Input {tmp_path} is a directory, not a file: give one {kind}.\n"


def test_a_read_only_output_folder_is_named_not_the_temporary_file(pair, wav, tmp_path, capsys, monkeypatch):
    """What the kernel answers in a folder the user may not write to (tests run as root, so it is simulated at
    os.open, where atomic_path creates its temporary file)."""
    import errno
    import os

    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):
        if os.path.dirname(os.fspath(path)) == str(tmp_path / "ro"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(os, "open", refusing_open)
    out = tmp_path / "ro" / "o.ecdc"
    assert cli.main(["compress", str(wav), str(out), "--model", str(pair.folder)]) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err == f"error: Cannot write o.ecdc in folder {tmp_path / 'ro'}: Permission denied.\n"
    assert list((tmp_path / "ro").iterdir()) == []


@pytest.mark.parametrize(
    "argv, status, message",
    [
        (["compress", "{tmp}/none.wav"], 1, "Input file {tmp}/none.wav does not exist."),
        (["decompress", "{tmp}/none.ecdc"], 1, "Input file {tmp}/none.ecdc does not exist."),
        (["compress", "{wav}", "--model", "{tmp}/nope"], 1, "Model folder {tmp}/nope does not exist: give"),
        (["decompress", "{ecdc}", "--model", "{tmp}"], 1, "Model folder {tmp} has no config.json (it holds"),
        (["encode-dataset", "{tmp}/ds", "--model", "{tmp}/nope", "--output-dir", "{tmp}/o"], 2, "Model folder"),
        (["serve", "--model", "{tmp}/empty", "--port", "0"], 2, "Model folder {tmp}/empty is empty"),
        (["train", "{tmp}/none.yaml"], 1, "Config file {tmp}/none.yaml does not exist."),
        (["evaluate", "{wav}", "--model", "{tmp}/nope"], 1, "Model folder {tmp}/nope does not exist"),
        (["evaluate", "--model", "{tmp}/nope"], 1, "Give audio files / folders or --dataset"),
    ],
)
def test_every_subcommand_reports_errors_in_one_form(pair, wav, tmp_path, capsys, argv, status, message):
    """`error: <message>` on one line, whichever subcommand (no `serve: error:`, no traceback, no Hub detour)."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "x.ecdc").write_bytes(ecdc.compress(pair.model, torch.zeros(1, 2400)))
    fields = {"tmp": tmp_path, "wav": wav, "ecdc": tmp_path / "x.ecdc"}
    assert cli.main([a.format(**fields) for a in argv]) == status
    err = capsys.readouterr().err
    assert err.startswith("error: " + message.format(**fields)) and err.count("\n") == 1, err


def test_a_missing_optional_package_names_its_extra(monkeypatch, capsys):
    """`make install` / `pip install encodec-hf` leave the extras out: their absence is an install to do."""

    def needs_yaml(args):
        raise ModuleNotFoundError("No module named 'yaml'", name="yaml")

    monkeypatch.setitem(cli.SUBCOMMANDS, "train", cli.Subcommand("train", lambda p: None, needs_yaml))
    assert cli.main(["train"]) == cli.EXIT_USER_ERROR
    assert (
        capsys.readouterr().err == "error: this needs the optional package 'yaml': pip install 'encodec-hf[train]'\n"
    )
