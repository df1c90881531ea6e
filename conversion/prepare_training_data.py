"""Build the offline training set for the project's small shipped model: real music, real and synthetic speech,
and sound effects from Debian packages, converted to 24 kHz mono FLAC with a JSONL manifest.

Usage (as root, where `apt-get download` and `apt-get install` work)::

    nice -n 19 python conversion/prepare_training_data.py --out /work/data24k

Steps, each skipped when its output exists (so a rerun resumes):
1. `apt-get download` the packages in SOURCES and `dpkg-deb -x` them under OUT/_debs and OUT/_x.
2. Pick each package's audio files (sorted, then shuffled with a fixed seed and capped at --max-minutes per
   package so one large soundtrack does not dominate), decode with soundfile, or with Debian's ffmpeg for the
   two formats libsndfile lacks (raw G.722 telephone prompts, XM tracker music), downmix to mono and resample
   to 24 kHz with `encodec_hf.audio_io.convert_audio`, write 16-bit FLAC to OUT/<label>/<package>/.
3. Synthesise speech with festival (HTS voice cmu_us_slt_arctic) and espeak-ng from the King James Bible text
   (public domain, Debian package bible-kjv) until --synthetic-minutes are reached.
4. Write OUT/manifest.jsonl (one object per file: path relative to OUT, label, duration, rms_db, source
   package and version, source file, licence and copyright as stated in /usr/share/doc/<pkg>/copyright) and
   OUT/summary.json (minutes per source and label, licences, size, elapsed time).

Licences: for machine-readable (DEP-5) copyright files the licence of each file is the last `Files:` stanza that
matches its path, as DEP-5 specifies; for the others the licence below was read from the copyright file by hand.
Packages whose terms are unclear for derived model weights are left out (see SKIPPED). Runtime code of the
package never uses ffmpeg, festival or espeak-ng; they are used here only, offline.

This script must never read /work/shared/audio: test_24k.wav there is the held-out evaluation clip.
"""

from __future__ import annotations

import argparse
import fnmatch
import io
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from encodec_hf.audio_io import convert_audio  # noqa: E402

RATE = 24_000
AUDIO_SUFFIXES = (".ogg", ".oga", ".opus", ".wav", ".flac", ".mp3", ".g722", ".xm")
FFMPEG_SUFFIXES = {".g722": ["-f", "g722"], ".xm": []}  # raw G.722 needs its format named

# package, label, glob(s) of files (relative to the extracted tree; "archive.zip::glob" reads inside a zip),
# and, for copyright files that are not DEP-5, the licence and copyright holder as read from them.
SOURCES = [
    # music
    dict(package="warzone2100-music", label="music", files=["usr/share/games/warzone2100/music/**/*.opus"]),
    dict(package="planetblupi-music-ogg", label="music", files=["usr/share/planetblupi/music/*.ogg"]),
    dict(
        package="singularity-music",
        label="music",
        files=["usr/share/games/singularity/music/**/*.ogg"],
        licence="CC-BY-SA-3.0",
        copyright="2007-2008,2012 Max McCracken",
    ),
    dict(
        package="nexuiz-music",
        label="music",
        files=["usr/share/games/nexuiz/data/music.pk3::sound/cdtracks/*.ogg"],
        licence="GPL-2+",
        copyright="2002-2009 Alientrap, Lee Vermeulen",
    ),
    dict(package="hyperrogue-music", label="music", files=["usr/share/hyperrogue/music/*.ogg"]),
    dict(package="asc-music", label="music", files=["usr/share/games/asc/music/*.mp3"]),
    dict(
        package="asterisk-moh-opsound-g722",
        label="music",
        files=["usr/share/**/*.g722"],
        licence="CC-BY-SA-3.0",
        copyright="2008-2009 Paul Shuler (Macroform), Manolo Camp, Reno Project",
    ),
    dict(
        package="fb-music-high",
        label="music",
        files=["usr/share/games/frozen-bubble/snd/*.xm"],
        licence="GPL-2+",
        copyright="Matthias Le Bidan",
    ),
    # real speech
    dict(package="asterisk-core-sounds-en-g722", label="speech", files=["usr/share/**/*.g722"]),
    dict(package="ktuberling-data", label="speech", files=["usr/share/ktuberling/sounds/*/*.*"]),
    dict(
        package="warzone2100-data",
        label="speech",
        files=[
            "usr/share/games/warzone2100/base.wz::sequenceaudio/*.ogg",
            "usr/share/games/warzone2100/base.wz::audio/tutorial/*.ogg",
            "usr/share/games/warzone2100/base.wz::audio/memressp/*.ogg",
        ],
        zip_prefix="data/base/",  # where the copyright file's paths put the archive's contents
    ),
    # other sounds
    dict(package="hyperrogue-music", label="other", files=["usr/share/hyperrogue/sounds/*.ogg"], tag="sounds"),
    dict(package="sound-theme-freedesktop", label="other", files=["usr/share/sounds/freedesktop/stereo/*.oga"]),
    dict(
        package="warzone2100-data",
        label="other",
        files=["usr/share/games/warzone2100/base.wz::audio/sfx/**/*.ogg"],
        zip_prefix="data/base/",
        tag="sfx",
    ),
]
SKIPPED = {
    "drascula-music": "Drascula licence forbids charging for the game; its terms for derived works are unclear.",
    "tuxtype-data": "some sounds come from an unnamed 'copyright-free' CD and some files are not covered at all.",
    "hedgewars-data": "voices are GFDL-1.3, a documentation licence, unclear for model weights.",
    "gcompris-qt-data": "ships no voices (GCompris downloads them at run time).",
}
TEXT_PACKAGE = "bible-kjv"  # public-domain text for synthetic speech (bible-kjv-text: "copyright ... expired")
SYNTH_TOOLS = {
    "festival-slt-hts": dict(
        packages=["festival", "festvox-us-slt-hts"],
        licence="synthetic; voice festvox-us-slt-hts EST-2003 (BSD-like, CMU); text public domain (KJV)",
        copyright="voice 2003 Carnegie Mellon University",
    ),
    "espeak-ng": dict(
        packages=["espeak-ng"],
        licence="synthetic; espeak-ng GPL-3+ (voice data); text public domain (KJV)",
        copyright="espeak-ng authors",
    ),
}


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kwargs)


def package_version(package: str, deb_dir: Path) -> str:
    deb = next(deb_dir.glob(f"{package}_*.deb"))
    return run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True).stdout.strip()


def fetch(package: str, deb_dir: Path, tree_dir: Path) -> Path:
    """Download and extract `package`; returns its extracted tree."""
    deb_dir.mkdir(parents=True, exist_ok=True)
    if not list(deb_dir.glob(f"{package}_*.deb")):
        run(["apt-get", "download", package], cwd=deb_dir)
    tree = tree_dir / package
    if not tree.is_dir():
        tree.mkdir(parents=True)
        run(["dpkg-deb", "-x", str(next(deb_dir.glob(f"{package}_*.deb"))), str(tree)])
    return tree


# --------------------------------------------------------------------------------------------------
# Licences from /usr/share/doc/<pkg>/copyright.
# --------------------------------------------------------------------------------------------------


def dep5_stanzas(text: str) -> list[dict[str, str]] | None:
    """`[{"files", "license", "copyright"}]` of a DEP-5 copyright file (None if it is not DEP-5)."""
    if not re.match(r"Format:\s*\S*copyright-format", text):
        return None
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, value = line.split(":", 1)
                key = key.strip().lower()
                fields[key] = value.strip()
        if "files" in fields and "license" in fields:
            stanzas.append(
                {
                    "files": fields["files"].split(),
                    "license": fields["license"].splitlines()[0].strip(),
                    "copyright": " ".join(fields.get("copyright", "").split()),
                }
            )
    return stanzas


def dep5_licence(stanzas: list[dict], path: str) -> tuple[str, str] | None:
    """Licence and copyright of `path` (source-tree path or install path): the last matching stanza wins.
    None when no stanza covers it (such files are left out: their licence is not stated)."""
    found = None
    for stanza in stanzas:
        for pattern in stanza["files"]:
            if pattern == "*" or fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path, "*/" + pattern):
                found = stanza
    return None if found is None else (found["license"], found["copyright"])


# --------------------------------------------------------------------------------------------------
# Decoding and writing.
# --------------------------------------------------------------------------------------------------


def decode(data: bytes, suffix: str) -> tuple[np.ndarray, int]:
    """`[C, T]` float32 and rate: soundfile when it can, Debian's ffmpeg for G.722 and tracker modules."""
    if suffix not in FFMPEG_SUFFIXES:
        audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        return audio.T, rate
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:  # tracker modules need a seekable input
        tmp.write(data)
        tmp.flush()
        cmd = ["ffmpeg", "-v", "error", *FFMPEG_SUFFIXES[suffix], "-i", tmp.name, "-f", "wav", "-c:a", "pcm_f32le"]
        out = run(["nice", "-n", "19", *cmd, "pipe:1"], capture_output=True).stdout
    audio, rate = sf.read(io.BytesIO(out), dtype="float32", always_2d=True)
    return audio.T, rate


def write_flac(path: Path, audio: np.ndarray, rate: int) -> tuple[float, float]:
    """Mono 24 kHz 16-bit FLAC; returns `(duration s, rms dBFS)`."""
    mono = convert_audio(torch.from_numpy(np.ascontiguousarray(audio)), rate, RATE, 1)[0].numpy()
    peak = float(np.abs(mono).max()) if mono.size else 0.0
    if peak > 1.0:  # resampling overshoot; keep the file undistorted
        mono = mono / peak
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), mono, RATE, subtype="PCM_16", format="FLAC")
    rms = float(np.sqrt(np.mean(np.square(mono, dtype=np.float64)))) if mono.size else 0.0
    return mono.size / RATE, 20 * math.log10(max(rms, 1e-10))


def list_files(tree: Path, patterns: list[str]) -> list[tuple[str, callable]]:
    """`[(name, read bytes)]` for the files the patterns match; zip members appear as `archive::member`."""
    found = {}
    for pattern in patterns:
        if "::" in pattern:
            archive, inner = pattern.split("::")
            with zipfile.ZipFile(tree / archive) as z:
                for member in z.namelist():
                    if fnmatch.fnmatch(member, inner):
                        found[f"{archive}::{member}"] = (tree / archive, member)
        else:
            for file in tree.glob(pattern):
                if file.is_file() and file.suffix.lower() in AUDIO_SUFFIXES:
                    found[str(file.relative_to(tree))] = (file, None)

    def reader(file: Path, member: str | None):
        if member is None:
            return file.read_bytes
        return lambda: zipfile.ZipFile(file).read(member)

    return [(name, reader(*found[name])) for name in sorted(found)]


def convert_source(source: dict, args, out: Path, manifest: list[dict], totals: dict, uncovered: list) -> None:
    package, label = source["package"], source["label"]
    tree = fetch(package, out / "_debs", out / "_x")
    version = package_version(package, out / "_debs")
    text = (tree / "usr/share/doc" / package / "copyright").read_text(errors="replace")
    stanzas = dep5_stanzas(text)
    if stanzas is None and "licence" not in source:
        raise RuntimeError(f"{package}: copyright file is not DEP-5; state its licence in SOURCES.")
    files = list_files(tree, source["files"])
    if not files:
        raise RuntimeError(f"{package}: no audio files matched {source['files']}")
    random.Random(f"{package}:{label}").shuffle(files)  # capped packages get a spread of files, reproducibly
    key = f"{package}/{source.get('tag', label)}"
    minutes, count = 0.0, 0
    for name, read in files:
        if minutes >= args.max_minutes:
            break
        suffix = Path(name.split("::")[-1]).suffix.lower()
        target = out / label / key.replace("/", "_") / (re.sub(r"[^A-Za-z0-9._-]+", "_", name) + ".flac")
        if stanzas is not None:
            inner = name.split("::")[-1]
            path = source.get("zip_prefix", "") + inner if "::" in name else name
            stated = dep5_licence(stanzas, path)
            if stated is None:
                print(f"  skip {name}: no copyright stanza covers it", flush=True)
                uncovered.append(f"{package}: {name}")
                continue
            licence, holder = stated
        else:
            licence, holder = source["licence"], source["copyright"]
        if not target.exists():
            try:
                audio, rate = decode(read(), suffix)
            except (sf.LibsndfileError, subprocess.CalledProcessError, RuntimeError) as err:
                print(f"  skip {name}: cannot decode ({err})", flush=True)
                continue
            if audio.shape[1] < rate // 10:  # clicks under 0.1 s teach nothing at 1 s crops
                continue
            original_rate = rate
            duration, rms_db = write_flac(target, audio, rate)
        else:
            info = sf.info(str(target))
            duration, original_rate = info.duration, None
            data, _ = sf.read(str(target), dtype="float64")
            rms_db = 20 * math.log10(max(float(np.sqrt(np.mean(data**2))), 1e-10))
        entry = dict(
            path=str(target.relative_to(out)),
            label=label,
            duration=round(duration, 3),
            rms_db=round(rms_db, 2),
            source_package=package,
            package_version=version,
            source_file=name,
            licence=licence,
            copyright=holder,
            synthetic=False,
        )
        if original_rate:
            entry["original_rate"] = original_rate
        manifest.append(entry)
        minutes, count = minutes + duration / 60, count + 1
    totals[key] = dict(label=label, minutes=round(minutes, 2), files=count)
    print(f"{key}: {minutes:.1f} min", flush=True)


# --------------------------------------------------------------------------------------------------
# Synthetic speech from public-domain text.
# --------------------------------------------------------------------------------------------------


def kjv_passages(words_per_passage: int = 40) -> list[str]:
    """Consecutive verses of the King James Bible grouped into passages of about `words_per_passage` words."""
    books = ["Genesis", "Exodus", "Ruth", "Psalms", "Proverbs", "Ecclesiastes", "Matthew", "Luke", "John", "Acts"]
    passages, current = [], []
    for book in books:
        for chapter in range(1, 5):  # every book listed has at least 4 chapters
            text = run(["bible", "-f", f"{book} {chapter}:1-200"], capture_output=True, text=True).stdout
            for line in text.splitlines():
                verse = re.sub(r"^\S+\s+", "", line).strip()
                if not verse or verse.startswith("["):
                    continue
                current.append(verse)
                if sum(len(v.split()) for v in current) >= words_per_passage:
                    passages.append(" ".join(current))
                    current = []
    return passages


def synthesise(args, out: Path, manifest: list[dict], totals: dict) -> None:
    for tool in SYNTH_TOOLS.values():
        run(
            ["apt-get", "install", "-y", "--no-install-recommends", *tool["packages"], TEXT_PACKAGE],
            stdout=subprocess.DEVNULL,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    passages = kjv_passages()
    versions = {
        name: "+".join(
            run(["dpkg-query", "-W", "-f", "${Version}", p], capture_output=True, text=True).stdout
            for p in tool["packages"] + [TEXT_PACKAGE]
        )
        for name, tool in SYNTH_TOOLS.items()
    }
    voices = [("festival-slt-hts", None)] * 2 + [("espeak-ng", v) for v in ("en-us", "en-gb", "en-us+f3")]
    budget = {"festival-slt-hts": args.synthetic_minutes * 0.6, "espeak-ng": args.synthetic_minutes * 0.4}
    minutes = dict.fromkeys(budget, 0.0)
    tmp = out / "_tmp.wav"
    for n, passage in enumerate(passages):
        tool, voice = voices[n % len(voices)]
        if minutes[tool] >= budget[tool]:
            if all(minutes[t] >= budget[t] for t in budget):
                break
            continue
        target = out / "speech" / f"synthetic_{tool}" / f"{n:05d}{'_' + voice if voice else ''}.flac"
        if not target.exists():
            if tool == "festival-slt-hts":
                cmd = ["text2wave", "-eval", "(voice_cmu_us_slt_arctic_hts)", "-o", str(tmp)]
            else:
                cmd = ["espeak-ng", "-v", voice, "-s", str(150 + 10 * (n % 4)), "-w", str(tmp)]
            run(["nice", "-n", "19", *cmd], input=passage, text=True, stdout=subprocess.DEVNULL)
            audio, rate = sf.read(str(tmp), dtype="float32", always_2d=True)
            duration, rms_db = write_flac(target, audio.T, rate)
        else:
            data, _ = sf.read(str(target), dtype="float64")
            duration = data.size / RATE
            rms_db = 20 * math.log10(max(float(np.sqrt(np.mean(data**2))), 1e-10))
        info = SYNTH_TOOLS[tool]
        manifest.append(
            dict(
                path=str(target.relative_to(out)),
                label="speech",
                duration=round(duration, 3),
                rms_db=round(rms_db, 2),
                source_package="+".join(info["packages"] + [TEXT_PACKAGE]),
                package_version=versions[tool],
                source_file=f"{tool}{':' + voice if voice else ''} passage {n}",
                licence=info["licence"],
                copyright=info["copyright"],
                synthetic=True,
            )
        )
        minutes[tool] += duration / 60
    tmp.unlink(missing_ok=True)
    for tool, m in minutes.items():
        totals[f"synthetic/{tool}"] = dict(label="speech", minutes=round(m, 2))
        print(f"synthetic/{tool}: {m:.1f} min", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/work/data24k"))
    parser.add_argument("--max-minutes", type=float, default=45.0, help="cap per package and label")
    parser.add_argument("--synthetic-minutes", type=float, default=30.0)
    parser.add_argument("--keep-extracted", action="store_true", help="keep OUT/_debs and OUT/_x")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if "shared/audio" in str(out):
        parser.error("Never write training data next to the held-out evaluation clips.")
    torch.set_num_threads(1)
    start = time.time()
    manifest: list[dict] = []
    totals: dict[str, dict] = {}
    uncovered: list[str] = []
    for source in SOURCES:
        convert_source(source, args, out, manifest, totals, uncovered)
    synthesise(args, out, manifest, totals)
    with open(out / "manifest.jsonl", "w") as f:
        for entry in manifest:
            f.write(json.dumps(entry) + "\n")
    by_label = {}
    for entry in manifest:
        by_label[entry["label"]] = by_label.get(entry["label"], 0.0) + entry["duration"] / 3600
    licences = {}
    for entry in manifest:
        licences.setdefault(entry["licence"], set()).add(entry["source_package"])
    size = sum(f.stat().st_size for label in by_label for f in (out / label).rglob("*.flac"))
    summary = dict(
        sources=totals,
        hours_by_label={k: round(v, 3) for k, v in by_label.items()},
        hours_total=round(sum(by_label.values()), 3),
        files=len(manifest),
        licences={k: sorted(v) for k, v in licences.items()},
        skipped_packages=SKIPPED,
        skipped_files_without_licence=uncovered,
        size_mb=round(size / 1e6, 1),
        elapsed_s=round(time.time() - start, 1),
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if not args.keep_extracted:
        shutil.rmtree(out / "_x", ignore_errors=True)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
