"""EncodecModel: the transformers-compatible EnCodec model.

Same call signatures, output classes and state-dict keys as transformers' ``EncodecModel`` (5.x), so switching
is a one-line import change and the Hub checkpoints load as they are. Where the reference is wrong for users we
differ on purpose (see README, "Differences from transformers"):

* every item of a padded batch is encoded and decoded at its own length, so it gives what it gives alone (the
  reference encodes the zero padding too, which changes the last frame of causal models and the scales and codes
  of the last chunk of chunked models); "what it gives alone" up to float rounding, so up to near-tie codes
  (docs/performance.md, "What identical codes means");
* ``encode`` reports each item's length (``audio_length``) and ``decode`` trims to it, so
  ``decode(**encode(x))`` has exactly the input's length;
* inference (no autograd) runs an `InferencePlan` of the encoder and decoder (``inference_plan.py``): for
  weight-norm models by default faster kernels with weight norm folded once (``model.fast_inference``);
* chunks of equal length (all full 1 s chunks of the 48 kHz model, across the whole batch) run through the
  network as one batch instead of one by one.
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import nn
from transformers import initialization as init
from transformers.modeling_utils import PreTrainedAudioTokenizerBase
from transformers.utils import ModelOutput

from .chunking import ChunkLayout, linear_overlap_add
from .configuration import EncodecConfig
from .errors import CheckpointMismatchError, EncodecInputError
from .feature_extraction import EncodecFeatureExtractor
from .inference_plan import BatchLimits, InferencePlan, fast_inference_default
from .quantization import EncodecEuclideanCodebook, EncodecResidualVectorQuantizer
from .seanet import EncodecDecoder, EncodecEncoder

logger = logging.getLogger(__name__)

# Scale given to chunk slots an item does not have (a shorter item of a chunked batch); the reference gives
# all-silence chunks this value too (RMS 0 + 1e-8).
EMPTY_CHUNK_SCALE = 1e-8


def chunk_scale(chunk: torch.Tensor) -> torch.Tensor:
    """Scale `[B, 1, 1]` of one chunk `[B, C, L]`: the RMS of its mono mix + 1e-8, as Meta's `_encode_frame`.

    The original's operations on the original's shape, one chunk position at a time and never on chunks stacked
    along the batch: with several threads torch splits the reduction of one long row across the threads but
    gives each thread whole rows of a stack, which rounds differently (one ulp on some 1 s chunks at 48 kHz).
    transformers' ``sum(1) / C`` equals ``mean(1)`` bit for bit (a sum divided by the count, both ways).
    """
    mono = chunk.mean(dim=1, keepdim=True)
    volume = mono.pow(2).mean(dim=2, keepdim=True).sqrt()
    return 1e-8 + volume


@dataclass
class EncodecOutput(ModelOutput):
    """Output of [`EncodecModel.forward`].

    Args:
        audio_codes (`torch.LongTensor` `[chunks, B, K, F]`): discrete codes.
        audio_values (`torch.FloatTensor` `[B, C, T]`): decoded audio, as long as the input.
    """

    audio_codes: torch.LongTensor | None = None
    audio_values: torch.FloatTensor | None = None


@dataclass
class EncodecEncoderOutput(ModelOutput):
    """Output of [`EncodecModel.encode`].

    Args:
        audio_codes (`torch.LongTensor` `[chunks, B, K, F]`): codes per chunk; one chunk for unchunked models.
            Frames past an item's end (shorter items of a padded batch) are 0.
        audio_scales (`list[torch.FloatTensor | None]`, one `[B, 1]` per chunk): per-chunk RMS scales of models with
            ``normalize=True``, else `None` entries.
        last_frame_pad_length (`int`): frames of padding at the end of the last chunk (pass it to `decode`).
        audio_length (`torch.LongTensor` `[B]`): valid samples per item; `decode` trims each item to it.
    """

    audio_codes: torch.LongTensor | None = None
    audio_scales: list | None = None
    last_frame_pad_length: int | None = None
    audio_length: torch.LongTensor | None = None


@dataclass
class EncodecDecoderOutput(ModelOutput):
    """Output of [`EncodecModel.decode`].

    Args:
        audio_values (`torch.FloatTensor` `[B, C, T]`): decoded audio; samples past an item's length are 0.
    """

    audio_values: torch.FloatTensor | None = None


class EncodecPreTrainedModel(PreTrainedAudioTokenizerBase):
    config: EncodecConfig
    config_class = EncodecConfig
    base_model_prefix = "encodec"
    main_input_name = "input_values"
    # `from_pretrained(..., dtype=torch.bfloat16)` keeps the codebooks in float32, as `.to(dtype)` does (see
    # quantization.py): the nearest-code search is where 16 bits would hurt.
    _keep_in_fp32_modules_strict = ["quantizer"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # transformers calls this on the modules that hold tensors themselves: the torch convs inside
        # `EncodecConv1d`/`EncodecConvTranspose1d` (their weight-norm `original0/1` sit one level lower, in a
        # `ParametrizationList` that is visited first and needs nothing of its own).
        if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
            conv = module
            weight_norm = hasattr(conv, "parametrizations")
            weight = conv.parametrizations.weight.original1 if weight_norm else conv.weight
            # torch's default conv init (`reset_parameters`), which the original model trains from.
            init.kaiming_uniform_(weight, a=math.sqrt(5))
            if weight_norm:
                # g = ||v|| so that the initial weight equals v, as torch's weight_norm does when applied.
                init.copy_(conv.parametrizations.weight.original0, torch.norm_except_dim(weight, 2, 0))
            bound = 1 / math.sqrt(weight.shape[1] * weight.shape[2])  # torch's default bias bound: 1/sqrt(fan_in)
            init.uniform_(conv.bias, -bound, bound)
        elif isinstance(module, nn.GroupNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.LSTM):
            bound = 1 / math.sqrt(module.hidden_size)
            for param in module.parameters():
                init.uniform_(param, -bound, bound)
        elif isinstance(module, EncodecEuclideanCodebook):
            # The untrained state of `EncodecEuclideanCodebook.__init__` (zeros, not yet k-means initialised), so
            # `init_weights()` on the meta device gives what `__init__` gives, as transformers' model does.
            init.zeros_(module.embed)
            init.zeros_(module.embed_avg)
            init.zeros_(module.cluster_size)
            init.zeros_(module.inited)


def _refuse_mismatch(source, info: dict) -> None:
    """Raises `CheckpointMismatchError` naming the keys of transformers' loading report, if it lists any."""
    problems = {
        "missing": sorted(info.get("missing_keys", [])),
        "unexpected": sorted(info.get("unexpected_keys", [])),
        "mis-shaped": sorted(str(k) for k in info.get("mismatched_keys", [])),
    }
    problems = {kind: keys for kind, keys in problems.items() if keys}
    if problems:
        details = "; ".join(f"{len(v)} {k} (e.g. {', '.join(v[:3])})" for k, v in problems.items())
        raise CheckpointMismatchError(
            f"The weights in {source!r} do not match its config.json: {details}. "
            "Check that config.json belongs to these weights (num_filters, upsampling_ratios, norm_type, "
            "use_conv_shortcut, target_bandwidths and codebook_size decide which tensors exist). "
            "To load them anyway and inspect the differences, pass output_loading_info=True."
        )


class EncodecModel(EncodecPreTrainedModel):
    """The EnCodec neural audio codec: audio `[B, C, T]` <-> codes `[chunks, B, K, F]`.

    Example:

    ```python
    >>> import torch
    >>> from encodec_hf import EncodecConfig, EncodecModel
    >>> model = EncodecModel(EncodecConfig()).eval()  # or EncodecModel.from_pretrained("facebook/encodec_24khz")
    >>> audio = torch.randn(1, 1, 24000) * 0.1
    >>> enc = model.encode(audio, bandwidth=6.0)
    >>> enc.audio_codes.shape  # [chunks, B, K, F]: 8 codebooks at 6 kbps, 75 frames per second
    torch.Size([1, 1, 8, 75])
    >>> model.decode(**enc).audio_values.shape
    torch.Size([1, 1, 24000])
    ```
    """

    # How much goes through the network at once; see `BatchLimits` (one frozen value: replace it, e.g.
    # ``model.batch_limits = BatchLimits(audio_rate_samples=96_000)``).
    batch_limits: BatchLimits = BatchLimits()

    def __init__(self, config: EncodecConfig) -> None:
        super().__init__(config)
        self.encoder = EncodecEncoder(config)
        self.decoder = EncodecDecoder(config)
        self.quantizer = EncodecResidualVectorQuantizer(
            config.num_quantizers, config.codebook_size, config.codebook_dim
        )
        # Whether `encode` / `decode` without autograd run the fast inference steps (`inference_plan.py`): on by
        # default for weight-norm models, off for GroupNorm ones (`fast_inference_default`). False gives results
        # bit-identical to transformers'; True agrees with them to float rounding (~1e-7), so its codes differ
        # only at near-ties (docs/performance.md, "What identical codes means"). Autograd (training) always runs
        # the reference layers.
        self.fast_inference: bool = fast_inference_default(config)
        self._inference_plans: dict[str, InferencePlan] = {}
        self.post_init()

    # ------------------------------------------------------------------ inference plans
    def invalidate_inference_plan(self) -> None:
        """Drops the inference plans (folded weights), rebuilt at the next `encode` / `decode`.

        Needed only after replacing a parameter's ``.data``: in-place edits, ``load_state_dict`` and changes of
        dtype, device or `fast_inference` are noticed by themselves.
        """
        self._inference_plans = {}

    def _apply(self, fn, recurse: bool = True):
        # `.to()`, `.half()`, `.cuda()`... : the plans hold copies in the old dtype / device; free them now.
        self.invalidate_inference_plan()
        return super()._apply(fn, recurse)

    def _run_half(self, name: str, x: torch.Tensor, samples: int) -> torch.Tensor:
        """Runs ``self.encoder`` or ``self.decoder`` (`name`) on `x` whose items are `samples` audio samples long.

        Without autograd this runs the half's `InferencePlan`, the audio-rate layers on ``batch_limits`` pieces;
        under autograd, or for a replaced half (e.g. onnxruntime's), the module itself.
        """
        half = getattr(self, name)
        if torch.is_grad_enabled() or not isinstance(half, (EncodecEncoder, EncodecDecoder)):
            return half(x)
        plan = self._inference_plans.get(name)
        if plan is None or not plan.is_current(half, self.fast_inference):
            plan = self._inference_plans[name] = InferencePlan.build(half, fast=self.fast_inference)
        return plan(x, self.batch_limits.items_in_piece(samples))

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """Loads a Hub repo id or local folder (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``).

        Both weight-norm key layouts load: the legacy ``weight_g``/``weight_v`` of the Hub files and the
        ``parametrizations.weight.original0/1`` names of newer saves. By default a checkpoint whose tensors do not
        match its config (missing, unexpected or mis-shaped) raises
        :class:`~encodec_hf.errors.CheckpointMismatchError` instead of leaving random weights in the model.

        A caller who asks for the loading report (``output_loading_info=True``) or passes the weights itself
        (``state_dict=...``, possibly partial) gets transformers' contract instead: tensors the checkpoint lacks
        are initialised as in a fresh model (codebooks included, see `_init_weights`), and the report lists the
        missing, unexpected and mis-shaped keys. Shapes that cannot be loaded still raise.
        """
        want_info = kwargs.pop("output_loading_info", False)
        # Asking for the report, passing the weights or ignoring mis-shaped tensors opts into transformers' lenient
        # loading; everything else is refused when it does not fit.
        strict = not (want_info or "state_dict" in kwargs or kwargs.get("ignore_mismatched_sizes"))
        try:
            model, info = super().from_pretrained(
                pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
            )
        except RuntimeError as err:
            if "mismatch" in str(err).lower():
                raise CheckpointMismatchError(
                    f"The weights in {pretrained_model_name_or_path!r} do not fit its config.json: {err}"
                ) from err
            raise
        if strict:
            _refuse_mismatch(pretrained_model_name_or_path, info)
        return (model, info) if want_info else model

    def save_pretrained(
        self, save_directory, *args, is_main_process: bool = True, push_to_hub: bool = False, **kwargs
    ):
        """transformers' save (``config.json``, ``model.safetensors``) plus ``preprocessor_config.json`` derived
        from the config (`EncodecFeatureExtractor.write_for_config`), so `EncodecFeatureExtractor`,
        ``AutoFeatureExtractor`` and ``AutoProcessor`` load from the folder too."""
        hub = {}
        if push_to_hub:  # transformers would upload only the files its own save wrote: push the finished folder
            hub = {k: kwargs.pop(k) for k in ("commit_message", "create_pr", "private", "token") if k in kwargs}
            hub["repo_id"] = kwargs.pop("repo_id", os.path.basename(os.path.normpath(save_directory)))
        super().save_pretrained(save_directory, *args, is_main_process=is_main_process, **kwargs)
        if is_main_process:
            EncodecFeatureExtractor.write_for_config(self.config, save_directory)
            if push_to_hub:
                self.push_to_hub(**hub)

    # ------------------------------------------------------------------ helpers
    @property
    def sampling_rate(self) -> int:
        return self.config.sampling_rate

    def get_num_quantizers_for_bandwidth(self, bandwidth: float | None = None) -> int:
        return self.config.num_quantizers_for_bandwidth(bandwidth)

    @property
    def chunk_layout(self) -> ChunkLayout:
        """The model's chunk layout (spans, frames per chunk): see ``codec/chunking.py``."""
        return ChunkLayout.from_config(self.config)

    def _check_audio(self, input_values) -> torch.Tensor:
        """Validates `[B, C, T]` float audio and casts it to the model's device and dtype."""
        if not isinstance(input_values, torch.Tensor):
            raise TypeError(
                "input_values must be a torch.Tensor of shape [batch, channels, samples], got "
                f"{type(input_values).__name__}. "
                "Use EncodecFeatureExtractor(..., return_tensors='pt') or torch.as_tensor(audio, dtype=torch.float32)."
            )
        if not input_values.is_floating_point():
            hint = (
                " Integer PCM must be scaled to [-1, 1] first, e.g. x.float() / 32768 for int16."
                if input_values.dtype != torch.bool and not input_values.is_complex()
                else ""
            )
            raise TypeError(f"input_values must be floating point audio, got dtype {input_values.dtype}.{hint}")
        if input_values.ndim != 3:
            raise EncodecInputError(
                f"input_values must have shape [batch, channels, samples], got {tuple(input_values.shape)}. "
                "For a single clip of shape [samples] use x[None, None]; for [channels, samples] use x[None]."
            )
        batch, channels, length = input_values.shape
        if channels != self.config.audio_channels:
            fix = (
                "average the channels: x.mean(dim=1, keepdim=True)"
                if self.config.audio_channels == 1
                else ("duplicate the mono channel: x.expand(-1, 2, -1)")
            )
            raise EncodecInputError(
                f"This model expects {self.config.audio_channels} audio channel(s) but input_values has {channels} "
                f"(shape {tuple(input_values.shape)}, read as [batch, channels, samples]); {fix}."
            )
        if batch == 0 or length == 0:
            raise EncodecInputError(f"input_values is empty (shape {tuple(input_values.shape)}); nothing to encode.")
        return input_values.to(device=self.device, dtype=self.dtype)

    def _lengths_from_mask(self, padding_mask, batch: int, length: int, name: str = "padding_mask") -> list[int]:
        """Valid samples per item from a right-padding mask `[B, T]`, `[B, 1, T]` or `[B, C, T]`."""
        mask = torch.as_tensor(padding_mask)
        if mask.ndim == 3:
            if not bool((mask == mask[:, :1]).all()):
                raise EncodecInputError(f"{name} must be the same for every channel of an item.")
            mask = mask[:, 0]
        if mask.ndim != 2 or mask.shape[0] != batch or (length is not None and mask.shape[1] != length):
            expected = f"[{batch}, {length}]" if length is not None else f"[{batch}, samples]"
            raise EncodecInputError(f"{name} must have shape {expected} (batch, samples), got {tuple(mask.shape)}.")
        if mask.is_floating_point() and not bool(((mask == 0) | (mask == 1)).all()):
            raise EncodecInputError(f"{name} must hold only 0 (padding) and 1 (audio).")
        mask = mask.bool()
        lengths = mask.sum(dim=1)
        positions = torch.arange(mask.shape[1], device=mask.device)
        if not bool((mask == (positions[None] < lengths[:, None])).all()):
            raise EncodecInputError(
                f"{name} must mark each item's audio as a prefix followed by padding (right padding, as "
                "EncodecFeatureExtractor produces); left or interleaved padding is not supported."
            )
        if bool((lengths == 0).any()):
            empty = torch.nonzero(lengths == 0).flatten().tolist()
            raise EncodecInputError(f"Items {empty} of {name} are all padding; there is no audio to encode.")
        return lengths.tolist()

    # ------------------------------------------------------------------ encode
    def _encode_chunks(self, chunks: torch.Tensor, num_quantizers: int, scale: torch.Tensor | None) -> torch.Tensor:
        """Chunks `[G, C, L]` (divided by their scales `[G, 1, 1]` if given) to codes `[G, K, ceil(L / hop)]`."""
        if scale is not None:
            chunks = chunks / scale
        latents = self._run_half("encoder", chunks, chunks.shape[-1])
        return self.quantizer.encode(latents, num_quantizers)

    def encode(
        self,
        input_values: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        bandwidth: float | None = None,
        return_dict: bool | None = None,
    ) -> EncodecEncoderOutput | tuple:
        """Encodes audio into codes.

        Args:
            input_values (`torch.FloatTensor` `[B, C, T]`): audio in [-1, 1], C = ``config.audio_channels``.
            padding_mask (`torch.Tensor` `[B, T]`, *optional*): 1 for audio, 0 for right padding. Each item is
                encoded at its own length, as it would be alone (up to near-tie codes: another batch shape can
                round the latents differently).
            bandwidth (`float`, *optional*): kbps, one of ``config.target_bandwidths``; defaults to the lowest
                (as transformers does).
            return_dict (`bool`, *optional*): return an [`EncodecEncoderOutput`] (default) or the tuple
                ``(audio_codes, audio_scales, last_frame_pad_length)``.

        Inputs shorter than one frame are accepted and give one frame (reflect padding, as the references).

        Raises:
            TypeError / EncodecInputError: non-tensor, integer or non-finite audio, wrong shape or channel count,
                empty input, malformed ``padding_mask``.
            UnsupportedBandwidthError: ``bandwidth`` not in ``config.target_bandwidths``.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        bandwidth = self.config.resolve_bandwidth(bandwidth)
        audio = self._check_audio(input_values)
        batch, _, length = audio.shape
        lengths = [length] * batch if padding_mask is None else self._lengths_from_mask(padding_mask, batch, length)
        num_quantizers = self.config.num_quantizers_for_bandwidth(bandwidth)
        layout = self.chunk_layout

        spans = [layout.spans(n) for n in lengths]
        for i, n in enumerate(lengths):
            # Only the valid samples matter: padding is never read.
            if not bool(torch.isfinite(audio[i, :, :n]).all()):
                raise EncodecInputError(
                    f"input_values[{i}] contains NaN or Inf samples; clean the audio (e.g. torch.nan_to_num) first."
                )

        # Group chunks of equal length across items so each group is one network call.
        groups: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
        for i, item_spans in enumerate(spans):
            for k, (start, end) in enumerate(item_spans):
                groups[end - start].append((i, k, start))

        num_chunks = max(len(s) for s in spans)
        frames = layout.frames(max(end - start for s in spans for start, end in s))
        codes = torch.zeros(num_chunks, batch, num_quantizers, frames, dtype=torch.long, device=audio.device)
        scales = torch.full((num_chunks, batch, 1), EMPTY_CHUNK_SCALE, dtype=audio.dtype, device=audio.device)
        normalize = self.config.normalize
        if normalize:
            # Chunk by chunk with the references' [B, C, L] tensors, so the scales (float32 in `.ecdc`) get their
            # bits: the whole batch at once when it is not padded (as transformers and Meta's package), else each
            # item alone (what a padded item must equal).
            together = all(item_spans == spans[0] for item_spans in spans)
            for i, item_spans in enumerate([spans[0]] if together else spans):
                items = slice(None) if together else slice(i, i + 1)
                for k, (start, end) in enumerate(item_spans):
                    scales[k, items] = chunk_scale(audio[items, :, start:end]).view(-1, 1)
        for chunk_length, members in groups.items():
            size = self.batch_limits.chunks_in_call(chunk_length)
            for first in range(0, len(members), size):
                part = members[first : first + size]
                chunks = torch.stack([audio[i, :, start : start + chunk_length] for i, _, start in part])
                part_scales = torch.stack([scales[k, i] for i, k, _ in part]).view(-1, 1, 1) if normalize else None
                part_codes = self._encode_chunks(chunks, num_quantizers, part_scales)
                for j, (i, k, _) in enumerate(part):
                    codes[k, i, :, : part_codes.shape[-1]] = part_codes[j]

        last_frames = max(layout.frames(s[-1][1] - s[-1][0]) for s in spans if len(s) == num_chunks)
        last_frame_pad_length = frames - last_frames
        audio_scales = list(scales.unbind(0)) if self.config.normalize else [None] * num_chunks
        if not return_dict:
            return codes, audio_scales, last_frame_pad_length
        return EncodecEncoderOutput(
            audio_codes=codes,
            audio_scales=audio_scales,
            last_frame_pad_length=last_frame_pad_length,
            audio_length=torch.tensor(lengths, dtype=torch.long),
        )

    # ------------------------------------------------------------------ decode
    def _check_codes(self, audio_codes) -> torch.Tensor:
        if not isinstance(audio_codes, torch.Tensor):
            raise TypeError(
                "audio_codes must be a torch.Tensor [chunks, batch, codebooks, frames], got "
                f"{type(audio_codes).__name__}."
            )
        if audio_codes.is_floating_point() or audio_codes.is_complex() or audio_codes.dtype == torch.bool:
            raise TypeError(f"audio_codes must be an integer tensor, got dtype {audio_codes.dtype}.")
        if audio_codes.ndim != 4:
            raise EncodecInputError(
                f"audio_codes must have shape [chunks, batch, codebooks, frames], got {tuple(audio_codes.shape)}. "
                "For codes of one chunk shaped [batch, codebooks, frames] use codes[None]."
            )
        chunks, batch, codebooks, frames = audio_codes.shape
        if min(chunks, batch, codebooks, frames) == 0:
            raise EncodecInputError(f"audio_codes is empty (shape {tuple(audio_codes.shape)}).")
        if self.config.chunk_length is None and chunks != 1:
            raise EncodecInputError(
                f"This model does not split audio into chunks, so audio_codes must have 1 chunk; got {chunks}."
            )
        if codebooks > self.config.num_quantizers:
            raise EncodecInputError(
                f"audio_codes has {codebooks} codebooks but the model has only {self.config.num_quantizers}."
            )
        low, high = int(audio_codes.min()), int(audio_codes.max())
        if low < 0 or high >= self.config.codebook_size:
            raise EncodecInputError(
                f"audio_codes must lie in [0, {self.config.codebook_size}); got values from {low} to {high}."
            )
        return audio_codes.to(device=self.device, dtype=torch.long)

    def _check_scales(self, audio_scales, chunks: int, batch: int) -> torch.Tensor | None:
        """Per-chunk scales as `[chunks, B, 1]`, or `None` when the model does not normalise."""
        if audio_scales is None or all(s is None for s in audio_scales):
            if self.config.normalize:
                raise EncodecInputError(
                    "This model normalises each chunk, so decode needs the audio_scales returned by encode."
                )
            return None
        if len(audio_scales) != chunks:
            raise EncodecInputError(
                f"audio_scales has {len(audio_scales)} entries but audio_codes has {chunks} chunks."
            )
        try:
            scales = torch.stack(
                [torch.as_tensor(s, dtype=self.dtype).to(self.device).reshape(-1) for s in audio_scales]
            )
        except (RuntimeError, TypeError) as err:
            raise EncodecInputError(f"audio_scales must be one [batch, 1] tensor per chunk: {err}") from err
        if scales.shape[1] not in (1, batch):
            raise EncodecInputError(
                f"Each audio_scales entry must hold one scale per item ({batch}), got {scales.shape[1]}."
            )
        if not bool(torch.isfinite(scales).all()) or bool((scales <= 0).any()):
            raise EncodecInputError("audio_scales must be finite and positive (they are RMS values + 1e-8).")
        return scales.expand(chunks, batch).unsqueeze(-1)

    def _decode_chunks(self, codes: torch.Tensor, scales: torch.Tensor | None) -> torch.Tensor:
        """Codes `[G, K, F]` (and scales `[G, 1]`) to audio `[G, C, F * hop]`."""
        audio = self._run_half(
            "decoder", self.quantizer.decode(codes, self.dtype), codes.shape[-1] * self.config.hop_length
        )
        return audio * scales.view(-1, 1, 1) if scales is not None else audio

    def decode(
        self,
        audio_codes: torch.LongTensor,
        audio_scales: list | None,
        padding_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
        last_frame_pad_length: int | None = 0,
        audio_length: torch.Tensor | None = None,
    ) -> EncodecDecoderOutput | tuple:
        """Decodes codes into audio.

        Args:
            audio_codes (`torch.LongTensor` `[chunks, B, K, F]`): codes from `encode`; K may be any number of
                codebooks up to ``config.num_quantizers``.
            audio_scales (`list` of `[B, 1]` tensors or `None`): per-chunk scales from `encode`.
            padding_mask (`torch.Tensor` `[B, T]`, *optional*): the mask given to `encode`; output is `[B, C, T]` and
                each item is decoded at its own length.
            last_frame_pad_length (`int`): frames of padding in the last chunk (from `encode`).
            audio_length (`torch.LongTensor` `[B]`, *optional*): valid samples per item (from `encode`); used when
                no ``padding_mask`` is given, so ``decode(**encode(x))`` returns exactly ``x``'s length.

        Without either, all frames are decoded (`F * hop_length` samples per chunk), as transformers does.

        Returns:
            [`EncodecDecoderOutput`] with ``audio_values`` `[B, C, T]`, or the tuple ``(audio_values,)``.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        codes = self._check_codes(audio_codes)
        chunks, batch, _, frames = codes.shape
        scales = self._check_scales(audio_scales, chunks, batch)
        if isinstance(last_frame_pad_length, bool) or not isinstance(last_frame_pad_length, int | None):
            raise TypeError(f"last_frame_pad_length must be an int, got {last_frame_pad_length!r}.")
        pad = last_frame_pad_length or 0
        if not 0 <= pad < frames:
            raise EncodecInputError(f"last_frame_pad_length must be in [0, {frames}), got {pad}.")
        hop = self.config.hop_length
        layout = self.chunk_layout

        out_length = None
        if padding_mask is not None:
            out_length = torch.as_tensor(padding_mask).shape[-1]
            lengths = self._lengths_from_mask(padding_mask, batch, None)
        elif audio_length is not None:
            lengths = [int(n) for n in torch.as_tensor(audio_length).reshape(-1).tolist()]
            if len(lengths) != batch or min(lengths) <= 0:
                raise EncodecInputError(
                    f"audio_length must hold one positive length per item ({batch}), got {lengths}."
                )
        else:
            lengths = None

        # Per item: which frames of which chunk to decode.
        if lengths is None:
            plan = [[(k, frames - (pad if k == chunks - 1 else 0)) for k in range(chunks)]] * batch
        else:
            plan = []
            for i, n in enumerate(lengths):
                needed = list(enumerate(layout.chunk_frames(n)))
                if len(needed) > chunks or max(f for _, f in needed) > frames:
                    raise EncodecInputError(
                        f"Item {i} is {n} samples long, which needs {len(needed)} chunk(s) of up to "
                        f"{max(f for _, f in needed)} frames, but audio_codes has {chunks} chunk(s) of "
                        f"{frames} frames. "
                        "Pass the padding_mask / audio_length that belongs to these codes."
                    )
                plan.append(needed)

        groups: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for i, item_plan in enumerate(plan):
            for k, f in item_plan:
                groups[f].append((i, k))
        decoded: dict[tuple[int, int], torch.Tensor] = {}
        for f, members in groups.items():
            size = self.batch_limits.chunks_in_call(f * hop)
            for first in range(0, len(members), size):
                part = members[first : first + size]
                part_codes = torch.stack([codes[k, i, :, :f] for i, k in part])
                part_scales = torch.stack([scales[k, i] for i, k in part]) if scales is not None else None
                for (i, k), audio in zip(part, self._decode_chunks(part_codes, part_scales), strict=False):
                    decoded[i, k] = audio

        items = []
        for i, item_plan in enumerate(plan):
            pieces = [decoded[i, k] for k, _ in item_plan]
            audio = pieces[0] if len(pieces) == 1 else linear_overlap_add(pieces, layout.stride)
            if lengths is not None:
                audio = audio[..., : lengths[i]]
            items.append(audio)
        width = out_length if out_length is not None else max(a.shape[-1] for a in items)
        audio_values = items[0].new_zeros(batch, items[0].shape[0], width)
        for i, audio in enumerate(items):
            n = min(audio.shape[-1], width)
            audio_values[i, :, :n] = audio[..., :n]
        if not return_dict:
            return (audio_values,)
        return EncodecDecoderOutput(audio_values=audio_values)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_values: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        bandwidth: float | None = None,
        audio_codes: torch.LongTensor | None = None,
        audio_scales: list | None = None,
        return_dict: bool | None = None,
        last_frame_pad_length: int | None = 0,
    ) -> EncodecOutput | tuple:
        """Encodes then decodes (or decodes the given codes); ``audio_values`` has the input's shape `[B, C, T]`."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if audio_codes is not None and audio_scales is None:
            raise ValueError("You specified `audio_codes` but did not specify the `audio_scales`")
        if audio_scales is not None and audio_codes is None:
            raise ValueError("You specified `audio_scales` but did not specify the `audio_codes`")
        if audio_codes is None:
            encoded = self.encode(input_values, padding_mask, bandwidth, return_dict=True)
            audio_codes, audio_scales = encoded.audio_codes, encoded.audio_scales
            last_frame_pad_length = encoded.last_frame_pad_length
            if padding_mask is None:
                padding_mask = torch.ones(input_values.shape[0], input_values.shape[-1], dtype=torch.bool)
        audio_values = self.decode(audio_codes, audio_scales, padding_mask, True, last_frame_pad_length).audio_values
        if not return_dict:
            return audio_codes, audio_values
        return EncodecOutput(audio_codes=audio_codes, audio_values=audio_values)


__all__ = [
    "EncodecDecoderOutput",
    "EncodecEncoderOutput",
    "EncodecModel",
    "EncodecOutput",
    "EncodecPreTrainedModel",
]
