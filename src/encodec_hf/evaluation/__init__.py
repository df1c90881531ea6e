"""Audio quality per bitrate: EnCodec models against Opus and anchors (`encodec-hf evaluate`).

    from encodec_hf.evaluation import evaluate, write_report
    result = evaluate(["facebook/encodec_24khz"], inputs=["clips/"], content="speech")
    write_report(result, "eval_out")       # table.md, results.csv / .json, PNG plots, index.md

Modules: `metrics` (pure metric functions, also the training losses' home for the mel / STFT distances),
`opus` (the baseline codec), `inputs` (files, folders, datasets), `runner` (the loop, processes,
aggregation), `report` (tables, JSON, plots), `api` (`evaluate`). docs/evaluation.md has the JSON schema.
"""

from .api import EvaluationResult, evaluate
from .metrics import mel_distance, si_snr, stft_distance
from .report import markdown_table, write_csv, write_json, write_report

__all__ = [
    "EvaluationResult",
    "evaluate",
    "markdown_table",
    "mel_distance",
    "si_snr",
    "stft_distance",
    "write_csv",
    "write_json",
    "write_report",
]
