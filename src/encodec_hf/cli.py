"""`encodec-hf`: compress audio to `.ecdc` files and back, as Meta's `encodec` command does.

    encodec-hf compress IN [OUT.ecdc|OUT.wav] [-b BANDWIDTH] [--lm] [--model REPO_OR_DIR] [--device cpu|cuda] [-f]
    encodec-hf decompress IN.ecdc [OUT.wav] [--model REPO_OR_DIR] [--device cpu|cuda] [-f] [-r]
    encodec-hf IN [OUT]          # picks by suffix: .ecdc in -> decompress, anything else -> compress
    encodec-hf encode-dataset DATASET --model M --output-dir D ...  # encodec_hf.integrations.encode_dataset
    encodec-hf serve --model M [--host H] [--port P] ...             # encodec_hf.integrations.endpoint
    encodec-hf train [CONFIG.yaml] [KEY=VALUE ...] [--set KEY=VALUE]             # docs/training.md
    encodec-hf evaluate IN... --model M [--report DIR]                         # encodec_hf.evaluation

Every argument parser of the package lives here. Subcommands live in the `SUBCOMMANDS` table: a new one is one
`Subcommand(help, add_arguments, run)` entry, so front-ends can grow without touching the others. Only this
module prints; everything it calls reports through exceptions and logging. Exit status: 0 done, 1 user error
(`error: <message>`: the package's `encodec_hf.errors` types, `CliError`, `OSError` for the files and models
named), 2 malformed command line or (encode-dataset, serve) refused input, 70 internal error (a bug: one line,
the traceback with `-v`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .errors import CliError
from .files import atomic_path

DEFAULT_MODEL = "facebook/encodec_24khz"
HQ_MODEL = "facebook/encodec_48khz"
PROGRESS_MIN_FRAMES = 750  # show a progress bar from 10 s of audio at 75 frames/s
VERBOSE_FLAGS = ("-v", "--verbose")
VERBOSE_HELP = "on an internal error, print its traceback"
# The parsers import only the standard library, so `--help` answers without torch; these mirror the values of the
# modules they belong to (integrations.encode_dataset.SHARD_FORMATS, integrations.endpoint.DEFAULT_MAX_BODY_BYTES
# and DEFAULT_MAX_QUEUE; tests/test_cli.py checks that they agree).
SHARD_FORMATS = ("parquet", "arrow")
SERVE_MAX_BODY_MB = 64.0
SERVE_MAX_QUEUE = 16


def _err(message: str) -> None:
    print(message, file=sys.stderr)


@contextlib.contextmanager
def atomic_output(path: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary path next to `path`; it replaces `path` only if the block succeeds."""
    if path.exists() and not force:
        raise CliError(f"Output file {path} exists. Use -f / --force to overwrite.")
    if not path.parent.is_dir():
        raise CliError(f"Output folder for {path} does not exist.")
    with atomic_path(path) as tmp:
        yield tmp


@contextlib.contextmanager
def _progress(total: int, description: str) -> Iterator[Callable[[int], None] | None]:
    """A tqdm bar of `total` frames on stderr, advanced by the callback it yields; it stays on screen at the end."""
    if total < PROGRESS_MIN_FRAMES:
        yield None
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=description, unit="frame", file=sys.stderr, leave=True, dynamic_ncols=True) as bar:
        yield bar.update


def _check_model_path(name: str | None) -> None:
    """A `--model` that is a path must be a model folder (`ModelNotFoundError` otherwise); imports no torch."""
    from .integrations.hub import check_model_folder, looks_like_path

    if name is not None and looks_like_path(name):
        check_model_folder(name)


def _load_model(name: str, device: str):
    from .integrations.hub import load_model

    return load_model(name, device)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{seconds:.1f} s ({hours}:{minutes:02d}:{secs:02d})"


def _summary(verb: str, summary, wall_s: float, target: Path) -> str:
    """The one line printed after compress / decompress: duration, bytes, real bitrate, wall time."""
    return (
        f"{verb} {_duration(summary.duration_s)} of audio, {summary.num_bytes:,} bytes of .ecdc "
        f"({summary.kbps:.2f} kbps), in {wall_s:.1f} s: {target}"
    )


def _check_input(path: Path, kind: str = "audio file") -> None:
    if path.is_dir():
        raise CliError(f"Input {path} is a directory, not a file: give one {kind}.")
    if not path.is_file():
        raise CliError(f"Input file {path} does not exist.")


def _decoded_suffix_ok(path: Path) -> bool:
    return path.suffix.lower() in (".wav", ".flac")


# --------------------------------------------------------------------------------------------- compress
def _add_compress_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="audio file (anything soundfile reads: wav, flac, ogg, ...)")
    parser.add_argument(
        "output", type=Path, nargs="?", help="OUT.ecdc, or OUT.wav for a round trip (default: IN.ecdc)"
    )
    # Meta's `encodec` command encodes at 6 kbps unless told otherwise; the library's default (the lowest target
    # bandwidth, EncodecConfig.resolve_bandwidth) is transformers'. The command keeps Meta's and passes it.
    parser.add_argument("-b", "--bandwidth", type=float, default=6.0, help="target bandwidth in kbps (default 6)")
    parser.add_argument("-l", "--lm", action="store_true", help="entropy-code with the LM: smaller, much slower")
    parser.add_argument("-q", "--hq", action="store_true", help=f"use the 48 kHz stereo model ({HQ_MODEL})")
    parser.add_argument("-r", "--rescale", action="store_true", help="rescale instead of clipping (.wav output)")
    _add_common_arguments(parser, f"default {DEFAULT_MODEL}, {HQ_MODEL} with --hq")


def _add_common_arguments(parser: argparse.ArgumentParser, model_default: str) -> None:
    parser.add_argument("--model", help=f"model folder or Hub repository ({model_default})")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the codec runs (the LM: CPU)")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite the output file")


def run_compress(args: argparse.Namespace) -> int:
    """Streams the input through the model into the `.ecdc` file (bounded memory, docs/ecdc.md); a model that
    cannot stream is run on the whole file."""
    import time

    _check_model_path(args.model)  # before torch's seconds of import: a mistyped folder is known at once
    import torch

    from .audio_io import audio_info
    from .ecdc import container as ecdc
    from .errors import UnsupportedBandwidthError

    start = time.perf_counter()
    _check_input(args.input)
    output = args.output or args.input.with_suffix(".ecdc")
    if output.suffix.lower() != ".ecdc" and not _decoded_suffix_ok(output):
        raise CliError("Output extension must be .wav or .ecdc")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise CliError("--device cuda was asked for but CUDA is not available.")
    with atomic_output(output, args.force) as tmp:
        model = _load_model(args.model or (HQ_MODEL if args.hq else DEFAULT_MODEL), args.device)
        config = model.config
        try:
            config.resolve_bandwidth(args.bandwidth)
        except UnsupportedBandwidthError:
            raise CliError(
                f"Bandwidth {args.bandwidth:g} is not supported by the model {ecdc.ecdc_model_name(config)}; "
                f"choose one of {', '.join(f'{b:g}' for b in config.target_bandwidths)}."
            ) from None
        info = audio_info(args.input)
        if info.channels != config.audio_channels:
            _err(f"Converting {info.channels} channel(s) to {config.audio_channels}.")
        if info.samplerate != config.sampling_rate:
            _err(f"Resampling from {info.samplerate} Hz to {config.sampling_rate} Hz.")
        length = -(-info.frames * config.sampling_rate // info.samplerate)  # resample's ceil(T * new / old)
        frames = ecdc.total_frames(config, length) if info.frames else 0
        wav_output = output.suffix.lower() != ".ecdc"
        ecdc_path = tmp.with_name(tmp.name + ".ecdc") if wav_output else tmp
        try:
            with _progress(frames, "compress") as progress:
                summary = _compress_to(model, args, ecdc_path, progress)
            if wav_output:
                with _progress(frames, "decompress") as progress:
                    decoded = _decompress_to(model, ecdc_path, tmp, args.rescale, output, progress)
                _clip_warning(decoded.peak, args.rescale)
        finally:
            if wav_output:
                with contextlib.suppress(FileNotFoundError):
                    ecdc_path.unlink()
    _err(_summary("Compressed", summary, time.perf_counter() - start, output))
    return 0


def _compress_to(model, args: argparse.Namespace, path: Path, progress):
    """`.ecdc` of the input file at `path`: streamed block by block, or whole for a model that cannot stream."""
    from .ecdc import container as ecdc
    from .ecdc import streamed

    if streamed.can_stream(model, args.bandwidth):
        return streamed.compress_file(model, args.input, path, args.bandwidth, use_lm=args.lm, progress=progress)
    from .audio_io import convert_audio, load_audio

    _err("This model cannot stream: the whole file is encoded at once (memory grows with its length).")
    audio, sampling_rate = load_audio(args.input)
    config = model.config
    audio = convert_audio(audio, sampling_rate, config.sampling_rate, config.audio_channels)
    path.write_bytes(ecdc.compress(model, audio, bandwidth=args.bandwidth, use_lm=args.lm, progress=progress))
    return streamed.EcdcFileSummary(audio.shape[1], config.sampling_rate, path.stat().st_size)


def _decompress_to(model, source: Path, tmp: Path, rescale: bool, output: Path, progress):
    """Decodes the `.ecdc` file `source` into the audio file `tmp` (format from `output`'s suffix)."""
    from .ecdc import container as ecdc
    from .ecdc import streamed

    fmt = output.suffix.lstrip(".").upper()
    if streamed.can_stream(model):
        return streamed.decompress_file(source, tmp, model=model, rescale=rescale, format=fmt, progress=progress)
    from .audio_io import save_audio

    _err("This model cannot stream: the whole file is decoded at once (memory grows with its length).")
    data = source.read_bytes()
    audio, sampling_rate = ecdc.decompress(data, model=model, progress=progress)
    peak = save_audio(tmp, audio, sampling_rate, rescale=rescale, format=fmt)
    return streamed.EcdcFileSummary(audio.shape[1], sampling_rate, len(data), peak)


def _clip_warning(peak: float, rescale: bool) -> None:
    if peak > 0.99 and not rescale:
        _err(
            f"Clipping!! max scale {peak}, limit is 0.99. "
            "To avoid clipping, use the `-r` option to rescale the output."
        )


# --------------------------------------------------------------------------------------------- decompress
def _add_decompress_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="an .ecdc file")
    parser.add_argument("output", type=Path, nargs="?", help="OUT.wav (default: IN_decompressed.wav)")
    parser.add_argument("-r", "--rescale", action="store_true", help="rescale the output instead of clipping it")
    _add_common_arguments(parser, f"default: the one the file's header names, {DEFAULT_MODEL} or {HQ_MODEL}")


def run_decompress(args: argparse.Namespace) -> int:
    """Streams the `.ecdc` file's codes through the model into the audio file (bounded memory, docs/ecdc.md)."""
    import time

    _check_model_path(args.model)

    from .ecdc import container as ecdc

    start = time.perf_counter()
    _check_input(args.input, ".ecdc file")
    output = args.output or args.input.with_name(args.input.stem + "_decompressed.wav")
    if not _decoded_suffix_ok(output):
        raise CliError("Output extension must be .wav (or .flac)")
    header, _ = ecdc.read_header(args.input.read_bytes())  # fail fast, before loading any model
    with atomic_output(output, args.force) as tmp:
        model = _load_model(args.model or ecdc.DEFAULT_MODEL_REPOS.get(header.model_name, DEFAULT_MODEL), args.device)
        frames = ecdc.total_frames(model, header.audio_length) if header.audio_length < 10**9 else 0
        with _progress(frames, "decompress") as progress:
            summary = _decompress_to(model, args.input, tmp, args.rescale, output, progress)
        _clip_warning(summary.peak, args.rescale)
    _err(_summary("Decompressed", summary, time.perf_counter() - start, output))
    return 0


# --------------------------------------------------------------------------------------------- encode-dataset
def _add_encode_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="Hub dataset id, a save_to_disk folder, or a Parquet/Arrow file or folder")
    parser.add_argument("--model", required=True, help="EnCodec model id or local folder (save_pretrained)")
    parser.add_argument("--output-dir", required=True, help="folder for the shards, the plan and the manifest")
    parser.add_argument("--split", default="train")
    parser.add_argument("--name", default=None, help="dataset configuration name")
    parser.add_argument("--revision", default=None)
    parser.add_argument("--audio-column", default="audio")
    parser.add_argument("--bandwidth", type=float, default=None, help="kbps; default: the model's lowest")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--shard-size", type=int, default=1000, help="rows per shard file")
    parser.add_argument("--format", choices=SHARD_FORMATS, default="parquet")
    parser.add_argument("--device", default="auto", help="auto (cuda:LOCAL_RANK if available, else cpu), cpu, cuda:0")
    parser.add_argument("--convert-channels", action="store_true", help="mix to mono / duplicate to stereo as needed")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--num-threads",
        type=_positive_int,
        default=None,
        help="torch threads per process (default: $ENCODEC_HF_NUM_THREADS, else OMP_NUM_THREADS, else 1; "
        "use more processes, torchrun --nproc-per-node N, to use more cores)",
    )


def run_encode_dataset(args: argparse.Namespace) -> int:
    """`encodec-hf encode-dataset` (also under `torchrun -m encodec_hf encode-dataset`): exit 2 on bad input."""
    from .errors import EncodecInputError, EncodePlanMismatchError
    from .integrations.encode_dataset import encode_dataset

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        manifest = encode_dataset(
            args.dataset,
            args.model,
            args.output_dir,
            split=args.split,
            name=args.name,
            revision=args.revision,
            audio_column=args.audio_column,
            bandwidth=args.bandwidth,
            batch_size=args.batch_size,
            shard_size=args.shard_size,
            fmt=args.format,
            device=args.device,
            convert_channels=args.convert_channels,
            progress=not args.no_progress,
            num_threads=args.num_threads,
        )
    except (EncodecInputError, EncodePlanMismatchError, KeyError, FileNotFoundError) as err:
        _err(f"error: {err.args[0] if isinstance(err, KeyError) and err.args else err}")  # KeyError's str quotes
        return 2
    if manifest is not None:
        print(f"Wrote {len(manifest['shards'])} shard(s) for {manifest['num_rows']} rows to {args.output_dir}")
    return 0


# --------------------------------------------------------------------------------------------- serve
def _add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model folder (save_pretrained / Hub repo snapshot) or id")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--max-duration-s", type=float, default=None, help="longest audio accepted (seconds)")
    parser.add_argument("--max-body-mb", type=float, default=SERVE_MAX_BODY_MB)
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="requests computed at once (default: the physical cores, at most 4)",
    )
    parser.add_argument(
        "--max-queue",
        type=_non_negative_int,
        default=SERVE_MAX_QUEUE,
        help=f"requests admitted to wait for a worker; beyond them: 503 + Retry-After (default {SERVE_MAX_QUEUE})",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="torch threads per worker (default: $ENCODEC_HF_NUM_THREADS,"
        " else the process's OMP_NUM_THREADS, else the physical cores / --workers, at least 1)",
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def run_serve(args: argparse.Namespace) -> int:
    """`encodec-hf serve`: the Inference Endpoints handler behind a local HTTP server, until interrupted."""
    from .integrations.endpoint import EndpointHandler, default_workers, make_server

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.workers is None:
        args.workers = default_workers()
    try:
        endpoint = EndpointHandler(
            args.model,
            max_duration_s=args.max_duration_s,
            device=args.device,
            workers=args.workers,
            num_threads=args.threads,
        )
    except (OSError, ValueError) as err:
        _err(f"error: {err}")
        return 2
    server = make_server(endpoint, args.host, args.port, int(args.max_body_mb * 2**20), args.max_queue)
    host, port = server.server_address[:2]
    # The first line is the address (scripts and tests read it); the limits go to the log.
    print(f"Serving encodec_hf endpoint on http://{host}:{port}", flush=True)
    threads = "inherited" if endpoint.num_threads is None else endpoint.num_threads
    logging.getLogger(__name__).info(
        "%d worker(s), %s torch thread(s) each, queue of %d; busy beyond that: 503",
        args.workers,
        threads,
        args.max_queue,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


# --------------------------------------------------------------------------------------------- train
def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "items",
        nargs="*",
        metavar="[CONFIG.yaml] [KEY=VALUE ...]",
        help="a YAML config (see docs/training.md), then overrides such as optim.lr=1e-4 run.steps=1000",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an override (repeatable)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")


def run_train(args: argparse.Namespace) -> int:
    from .training.config import load_config

    items = list(args.items)
    path = items.pop(0) if items and "=" not in items[0] else None
    # Printing works without data.train, so the defaults can start a config file.
    config = load_config(path, items + args.set, require_data=not args.print_config)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    from .training.trainer import train

    output = train(config)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line from the first process
        _err(f"Model saved to {output} (EncodecModel.from_pretrained({str(output)!r})).")
    return 0


# --------------------------------------------------------------------------------------------- evaluate
def _add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", type=Path, nargs="*", help="audio files and folders (searched recursively)")
    parser.add_argument("--model", action="append", required=True, help="model folder or Hub id (repeatable)")
    parser.add_argument("--dataset", help="a datasets Hub id, save_to_disk folder or data file")
    parser.add_argument("--split", default="test", help="dataset split (default test)")
    parser.add_argument("--audio-column", default="audio", help="dataset audio column (default audio)")
    parser.add_argument("--limit", type=int, help="evaluate the first N dataset rows")
    parser.add_argument("-b", "--bandwidth", type=float, action="append", help="kbps (repeatable; default: all)")
    parser.add_argument("--lm", choices=("auto", "off", "only"), default="auto", help="+LM rows (default auto)")
    parser.add_argument("--content", choices=("music", "speech"), default="music", help="picks ViSQOL mode etc.")
    parser.add_argument("--opus", type=float, action="append", help="Opus kbps (default 6, 12, 24 + bandwidths)")
    parser.add_argument("--no-baselines", action="store_true", help="skip Opus and the anchors")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="cut longer clips (default 30)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the models run")
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    parser.add_argument("--report", type=Path, help="write tables, JSON, PNG plots and index.md into this folder")
    parser.add_argument("--json", type=Path, help="write the JSON document here")
    parser.add_argument("--csv", type=Path, help="write the per-condition CSV here")


def run_evaluate(args: argparse.Namespace) -> int:
    import torch

    from .evaluation import evaluate, report

    if args.device == "cuda" and not torch.cuda.is_available():
        raise CliError("--device cuda was asked for but CUDA is not available.")
    if not args.inputs and not args.dataset:
        raise CliError("Give audio files / folders or --dataset to evaluate on.")
    result = evaluate(
        args.model,
        inputs=args.inputs,
        dataset=args.dataset,
        audio_column=args.audio_column,
        split=args.split,
        limit=args.limit,
        bandwidths=args.bandwidth,
        lm=args.lm,
        content=args.content,
        opus_kbps=args.opus,
        baselines=not args.no_baselines,
        max_seconds=args.max_seconds,
        device=args.device,
        workers=args.workers,
    )
    print(report.markdown_table(result), end="")
    notes = report.markdown_notes(result)
    if notes:
        print("\n" + notes, end="")
    if args.json:
        report.write_json(result, args.json)
    if args.csv:
        report.write_csv(result, args.csv)
    if args.report:
        _err(f"Report written to {report.write_report(result, args.report)}")
    return 0


# --------------------------------------------------------------------------------------------- dispatch
@dataclass(frozen=True)
class Subcommand:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


SUBCOMMANDS: dict[str, Subcommand] = {
    "compress": Subcommand("audio file -> .ecdc (or .wav round trip)", _add_compress_arguments, run_compress),
    "decompress": Subcommand(".ecdc -> audio file", _add_decompress_arguments, run_decompress),
    "encode-dataset": Subcommand(
        "tokenize a dataset into Parquet/Arrow shards (resumable, torchrun-ready)",
        _add_encode_dataset_arguments,
        run_encode_dataset,
    ),
    "serve": Subcommand(
        "serve the Inference Endpoints handler over HTTP on localhost", _add_serve_arguments, run_serve
    ),
    "train": Subcommand(
        "train or fine-tune a codec from a YAML config (accelerate / torchrun)", _add_train_arguments, run_train
    ),
    "evaluate": Subcommand(
        "quality per bitrate against Opus: tables, JSON, plots", _add_evaluate_arguments, run_evaluate
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="encodec-hf",
        description="EnCodec neural audio codec: .ecdc files compatible with Meta's `encodec` command. "
        "`encodec-hf IN [OUT]` picks compress or decompress from IN's suffix.",
    )
    parser.add_argument(*VERBOSE_FLAGS, action="store_true", help=VERBOSE_HELP)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, sub in SUBCOMMANDS.items():
        subparser = subparsers.add_parser(name, help=sub.help, description=sub.help)
        sub.add_arguments(subparser)
        # SUPPRESS: a subcommand's default must not overwrite `encodec-hf -v SUBCOMMAND`'s True.
        subparser.add_argument(*VERBOSE_FLAGS, action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    return parser


EXIT_USER_ERROR = 1  # bad input, a missing file, a refused overwrite: `error: <message>`
EXIT_USAGE = 2  # argparse's status for a malformed command line
EXIT_INTERNAL_ERROR = 70  # sysexits' EX_SOFTWARE: a bug, reported with a traceback under -v
# Modules of the optional extras (setup.py's extras_require): a missing one is an install to do, not a bug.
EXTRA_OF_MODULE = {
    "yaml": "train",
    "accelerate": "train",
    "visqol": "eval",
    "pystoi": "eval",
    "matplotlib": "eval",
    "scipy": "eval",
    "pesq": "pesq",
    "onnx": "onnx",
    "onnxruntime": "onnx",
}


def _report_failure(err: Exception, verbose: bool, input_path: Path | None = None) -> int:
    """Prints a failure of a subcommand and returns the exit status.

    User errors are the package's documented types (`encodec_hf.errors`, all of them), `CliError` and `OSError`
    (files and models the user named: missing, unreadable, unreachable). Anything else is a bug and is not dressed
    up as bad input: one "internal error" line, the traceback with -v / --verbose.
    """
    from . import errors

    user_errors = (CliError, OSError, *(getattr(errors, name) for name in errors.__all__))
    missing = (getattr(err, "name", None) or "").split(".")[0] if isinstance(err, ModuleNotFoundError) else ""
    if missing in EXTRA_OF_MODULE:
        extra = EXTRA_OF_MODULE[missing]
        _err(f"error: this needs the optional package {missing!r}: pip install 'encodec-hf[{extra}]'")
        return EXIT_USER_ERROR
    if isinstance(err, user_errors):
        where = f"{input_path}: " if isinstance(err, errors.EcdcFormatError) and input_path else ""
        _err(f"error: {where}{err}")
        return EXIT_USER_ERROR
    _err(f"internal error: {type(err).__name__}: {err}")
    _err("This is a bug in encodec-hf, not a problem with your input: please report it with the traceback.")
    if verbose:
        traceback.print_exception(err, file=sys.stderr)
    else:
        _err("Run the same command with -v / --verbose to see the traceback.")
    return EXIT_INTERNAL_ERROR


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `encodec-hf` console script and `python -m encodec_hf`; returns the exit status
    (0 done, 1 user error, 2 malformed command line, 70 internal error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = False
    while argv and argv[0] in VERBOSE_FLAGS:  # `encodec-hf -v SUBCOMMAND ...`
        verbose = True
        argv.pop(0)
    if argv and argv[0] not in SUBCOMMANDS and not argv[0].startswith("-"):
        # The original's interface: the input's suffix chooses the direction.
        argv.insert(0, "decompress" if Path(argv[0]).suffix.lower() == ".ecdc" else "compress")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return SUBCOMMANDS[args.command].run(args)
    except Exception as err:
        return _report_failure(err, verbose or getattr(args, "verbose", False), getattr(args, "input", None))


__all__ = ["SUBCOMMANDS", "CliError", "Subcommand", "atomic_output", "build_parser", "main"]
