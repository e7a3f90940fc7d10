"""The MUSER model: three towers (waveform, spectrogram, text), projections W_a, W_s, W_t into one
L2-normalised space, and save/load as safetensors + JSON (nothing is ever unpickled)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from muser.atomic import atomic_dir, atomic_write, atomic_write_json
from muser.config import AUGMENTATION_FIELDS, MODALITIES, TOWERS, ModelConfig, from_dict, preset, to_dict
from muser.hub import resolve_model
from muser.models.augment import WaveAugment
from muser.models.spectrogram import SpectrogramEncoder, make_specaugment
from muser.models.text import TextEncoder
from muser.models.tokenizer import Tokenize
from muser.models.waveform import WaveformEncoder

FORMAT_VERSION = 1
MODEL_TYPE = "muser"
AUDIO_EMBEDDINGS = TOWERS


def check_audio(wave: Any, min_samples: int = 1) -> torch.Tensor:
    """Validate the one amplitude convention: a floating (B, T) tensor in [-1, 1]; returns it as float32."""
    if not isinstance(wave, torch.Tensor):
        raise ValueError(f"audio must be a torch.Tensor of shape (batch, samples), got {type(wave).__name__}")
    if not wave.is_floating_point():
        raise ValueError(
            f"audio must be float in [-1, 1], got dtype {wave.dtype}; divide int16 PCM by 32768 first"
        )
    if wave.dim() != 2:
        raise ValueError(f"audio must have shape (batch, samples), got {tuple(wave.shape)}; mono only")
    if wave.shape[1] < min_samples:
        raise ValueError(f"audio clips need at least {min_samples} samples, got {wave.shape[1]}")
    # A cheap guard against the original code's fault (PCM fed at int16 scale): a small tolerance lets
    # resampler overshoot through, anything far outside [-1, 1] is a different convention.
    peak = float(wave.detach().abs().amax()) if wave.numel() else 0.0
    if not peak <= 1.5:  # also catches NaN
        raise ValueError(f"audio must lie in [-1, 1] (float, full scale 1.0), got a peak of {peak:g}")
    return wave.float()


def check_length(length: Any, wave: torch.Tensor) -> torch.Tensor | None:
    """Validate per-row valid sample counts for wave (B, T): None, or (B,) integers in [0, T]; returns
    an int64 tensor (or None). A count below one frame still pools one frame (the clip's first)."""
    if length is None:
        return None
    length = torch.as_tensor(length)
    if length.is_floating_point() or length.is_complex() or length.dtype == torch.bool:
        raise ValueError(f"length must hold integer sample counts, got dtype {length.dtype}")
    if length.shape != wave.shape[:1]:
        raise ValueError(
            f"length must have shape ({wave.shape[0]},): one valid sample count per audio row, "
            f"got {tuple(length.shape)}"
        )
    if length.numel() and not 0 <= int(length.min()) <= int(length.max()) <= wave.shape[1]:
        raise ValueError(
            f"length must lie in [0, {wave.shape[1]}] (valid samples of each padded row), "
            f"got {int(length.min())}..{int(length.max())}"
        )
    return length.long()


def architecture_mismatch(model: nn.Module, saved: dict[str, tuple[int, ...]]) -> str | None:
    """None when the tensor names and shapes `saved` fit `model`, else the first difference and counts."""
    mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in mine if k not in saved]
    unexpected = [k for k in saved if k not in mine]
    shapes = [k for k in mine if k in saved and mine[k] != saved[k]]
    if not (missing or unexpected or shapes):
        return None
    if shapes:
        first = f"{shapes[0]} is {saved[shapes[0]]} there but {mine[shapes[0]]} here"
    elif missing:
        first = f"{missing[0]} is missing there"
    else:
        first = f"{unexpected[0]} is not part of this model"
    counts = f"{len(shapes)} tensors differ in shape, {len(missing)} missing, {len(unexpected)} unexpected"
    return f"{first}; {counts}"


class MUSER(nn.Module):
    """Tri-modal encoder. `forward(batch)` returns whichever of audio/spec/text the batch has inputs for,
    each (B, embed_dim) and L2-normalised; logit scales live in the loss (muser.losses)."""

    def __init__(self, config: ModelConfig, text: TextEncoder) -> None:
        super().__init__()
        if config.audio_embedding not in AUDIO_EMBEDDINGS:
            raise ValueError(f"audio_embedding must be one of {', '.join(AUDIO_EMBEDDINGS)}")
        self.config = config
        self.waveform = WaveformEncoder(
            config.wave_channels,
            config.wave_frontend_filters,
            config.wave_frontend_kernel,
            config.wave_frontend_stride,
        )
        self.spectrogram = SpectrogramEncoder(
            sample_rate=config.sample_rate,
            kind=config.spec_kind,
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            n_mels=config.n_mels,
            fmin=config.fmin,
            fmax=config.fmax,
            trainable_filters=config.trainable_filters,
            channels=config.spec_channels,
            cqt_bins_per_octave=config.cqt_bins_per_octave,
            specaugment=config.specaugment,
            specaug_masks=config.specaug_masks,
            specaug_freq_width=config.specaug_freq_width,
            specaug_time_width=config.specaug_time_width,
        )
        self.wave_augment = WaveAugment(config.wave_gain_db, config.wave_shift, config.wave_mix)
        self.text = text
        d = config.embed_dim
        # W_a, W_s, W_t: bias-free linear maps as in CLIP (a bias only shifts every embedding alike).
        self.proj_audio = nn.Linear(self.waveform.out_dim, d, bias=False)
        self.proj_spec = nn.Linear(self.spectrogram.out_dim, d, bias=False)
        self.proj_text = nn.Linear(self.text.out_dim, d, bias=False)

    # ---- construction -------------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls, config: ModelConfig, tokenizer_texts: Iterable[str] | None = None, tokenizer: Any = None
    ) -> MUSER:
        """A freshly initialised model; the text tower is loaded from config.text_encoder when set, else
        built in code with `tokenizer` (a transformers tokenizer) or a WordPiece tokenizer trained on
        `tokenizer_texts` (default: a built-in music vocabulary)."""
        if config.text_encoder:
            text = TextEncoder.from_pretrained(
                config.text_encoder, config.text_max_length, config.text_pooling, config.text_freeze_layers
            )
        else:
            text = TextEncoder.build(
                tokenizer_texts,
                vocab_size=config.vocab_size,
                hidden=config.text_hidden,
                layers=config.text_layers,
                heads=config.text_heads,
                max_length=config.text_max_length,
                pooling=config.text_pooling,
                freeze_layers=config.text_freeze_layers,
                tokenizer=tokenizer,
            )
        return cls(config, text)

    @classmethod
    def from_preset(cls, name: str, tokenizer_texts: Iterable[str] | None = None, **overrides: Any) -> MUSER:
        """`MUSER.from_preset("tiny")`; overrides are ModelConfig fields (e.g. embed_dim=256)."""
        return cls.from_config(preset(name, **overrides), tokenizer_texts)

    # ---- properties ---------------------------------------------------------------------------------

    @property
    def tokenizer(self):
        """The text tower's transformers tokenizer (PreTrainedTokenizerFast for the built-in one)."""
        return self.text.tokenizer

    @property
    def text_is_pretrained(self) -> bool:
        return self.text.source is not None

    @property
    def device(self) -> torch.device:
        return self.proj_audio.weight.device

    @property
    def min_samples(self) -> int:
        """Shortest clip (samples) the waveform tower accepts."""
        return self.waveform.min_samples

    def set_augmentation(self, config: ModelConfig) -> None:
        """Take config's training-mode augmentation (config.AUGMENTATION_FIELDS: SpecAugment, waveform gain,
        shift, mix) and keep the rest of this model's config: how a resumed run applies the options given
        again. These modules hold no weights, so the state dict is unchanged."""
        self.config = dataclasses.replace(
            self.config, **{name: getattr(config, name) for name in AUGMENTATION_FIELDS}
        )
        c = self.config
        self.wave_augment = WaveAugment(c.wave_gain_db, c.wave_shift, c.wave_mix)
        self.spectrogram.specaugment = make_specaugment(
            c.specaugment, c.specaug_masks, c.specaug_freq_width, c.specaug_time_width
        )

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by group (frozen text layers are left out), for per-group learning rates."""
        groups = {
            "waveform": self.waveform,
            "spectrogram": self.spectrogram,
            "text": self.text,
            "projections": nn.ModuleList([self.proj_audio, self.proj_spec, self.proj_text]),
        }
        return {k: [p for p in m.parameters() if p.requires_grad] for k, m in groups.items()}

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute the residual stages of both audio towers and the text transformer's blocks in the
        backward instead of keeping their activations: the same loss and gradients for about one extra
        forward of each, and far less activation memory (larger per-GPU batches). Active in training only."""
        self.waveform.grad_checkpointing = enabled
        self.spectrogram.grad_checkpointing = enabled
        self.text.set_grad_checkpointing(enabled)

    # ---- encoding -----------------------------------------------------------------------------------

    @property
    def tokenize(self) -> Tokenize:
        """Sentences -> input_ids, attention_mask (B, L) on the CPU; picklable, so the reader's workers run
        this very function (make_loader(tokenize=model.tokenize))."""
        return self.text.tokenize

    def _embed_waveform(self, wave: torch.Tensor, length: torch.Tensor | None = None) -> torch.Tensor:
        return F.normalize(self.proj_audio(self.waveform(wave, length)), dim=-1)

    def _embed_spectrogram(self, wave: torch.Tensor, length: torch.Tensor | None = None) -> torch.Tensor:
        return F.normalize(self.proj_spec(self.spectrogram(wave, length)), dim=-1)

    def _embed_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        dev = self.device
        return F.normalize(self.proj_text(self.text(input_ids.to(dev), attention_mask.to(dev))), dim=-1)

    def forward(
        self, batch: dict[str, Any], outputs: Collection[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """batch: audio (B, T) float in [-1, 1] (optional length (B,) valid samples, the rest zero
        padding, pooled out) and/or input_ids, attention_mask (B, L) ->
        {"audio", "spec", "text"}: (B, embed_dim) L2-normalised, each present when its input is.

        outputs: compute only these of audio/spec/text (None: all the batch has inputs for). Training
        with --loss-terms at runs no spectrogram tower this way (it gets no gradient either way).
        """
        wanted = set(MODALITIES if outputs is None else outputs)
        if wanted - set(MODALITIES):
            raise ValueError(f"outputs must be among {', '.join(MODALITIES)}, got {sorted(outputs or ())}")
        out = {}
        if "audio" in batch and wanted & {"audio", "spec"}:
            wave = check_audio(batch["audio"], self.min_samples).to(self.device)
            length = check_length(batch.get("length"), wave)
            wave = self.wave_augment(wave, length)  # identity in eval mode
            if "audio" in wanted:
                out["audio"] = self._embed_waveform(wave, length)
            if "spec" in wanted:
                out["spec"] = self._embed_spectrogram(wave, length)
        if "input_ids" in batch and "text" in wanted:
            if "attention_mask" not in batch:
                raise ValueError("batch has input_ids but no attention_mask; tokenize with model.tokenize")
            out["text"] = self._embed_text(batch["input_ids"], batch["attention_mask"])
        return out

    def _audio_input(
        self, wave: torch.Tensor, which: str | None, length: torch.Tensor | None
    ) -> tuple[str, torch.Tensor, torch.Tensor | None]:
        """The checked (tower choice, wave on the model's device, length) of encode_audio/encode_towers."""
        which = which or self.config.audio_embedding
        if which not in AUDIO_EMBEDDINGS:
            raise ValueError(f"which must be one of {', '.join(AUDIO_EMBEDDINGS)}, not {which!r}")
        wave = check_audio(wave, self.min_samples).to(self.device)
        return which, wave, check_length(length, wave)

    def encode_audio(
        self, wave: torch.Tensor, which: str | None = None, length: torch.Tensor | None = None
    ) -> torch.Tensor:
        """wave: (B, T) float in [-1, 1] at config.sample_rate -> (B, embed_dim) L2-normalised.

        which: waveform | spectrogram | both (the normalised mean); default config.audio_embedding.
        length: (B,) valid samples per row (the rest zero padding, left out of the pooling); None: all.
        """
        which, wave, length = self._audio_input(wave, which, length)
        if which == "waveform":
            return self._embed_waveform(wave, length)
        if which == "spectrogram":
            return self._embed_spectrogram(wave, length)
        both = self._embed_waveform(wave, length) + self._embed_spectrogram(wave, length)
        return F.normalize(both, dim=-1)

    def encode_towers(
        self, wave: torch.Tensor, which: str | None = None, length: torch.Tensor | None = None
    ) -> torch.Tensor:
        """wave: (B, T) -> the audio towers' pooled outputs before the projection heads, not normalised:
        (B, waveform width + spectrogram width) for which=both (concatenated, waveform first), one tower's
        width for waveform | spectrogram; default config.audio_embedding (the towers encode_audio uses).

        These are the features linear probes read: a contrastive projection head keeps what the loss needs
        and drops the rest (SimCLR, Chen et al. 2020, measured +10 points of linear-probe accuracy before
        the head), and on real music the probe on them beat the probe on the shared embedding
        (README, Real music). Search, zero-shot and retrieval use encode_audio, the shared space.
        """
        which, wave, length = self._audio_input(wave, which, length)
        towers = []
        if which in ("waveform", "both"):
            towers.append(self.waveform(wave, length))
        if which in ("spectrogram", "both"):
            towers.append(self.spectrogram(wave, length))
        return torch.cat(towers, dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Sentences -> (B, embed_dim) L2-normalised (wrap in torch.no_grad() for inference)."""
        enc = self.tokenize(texts)
        return self._embed_text(enc["input_ids"], enc["attention_mask"])

    # ---- persistence --------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write config.json, model.safetensors (every tower, the text encoder included), text/config.json
        and tokenizer/ so that from_pretrained works offline without the original text encoder folder."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        from muser import __version__

        meta = {
            "model_type": MODEL_TYPE,
            "format_version": FORMAT_VERSION,
            "muser_version": __version__,
            "model": to_dict(self.config),
            "text": {"pretrained": self.text_is_pretrained, "source": self.text.source},
        }
        # Each part is replaced atomically (muser.atomic), config.json last: it is what makes the folder a
        # model folder, so a save killed half-way into a new folder leaves none. A whole existing folder is
        # swapped at once by writing into muser.atomic.atomic_dir, as the trainer's export does.
        with atomic_write(out / "model.safetensors") as tmp:
            # save_model (not save_file) drops tensors shared between modules (tied embeddings) safely.
            save_model(self, str(tmp), metadata={"format": "pt"})
        with atomic_dir(out / "text") as tmp:
            self.text.backbone.config.save_pretrained(tmp)
        with atomic_dir(out / "tokenizer") as tmp:
            self.tokenizer.save_pretrained(tmp)
        atomic_write_json(out / "config.json", meta)
        return out

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> MUSER:
        """Load a folder written by save_pretrained, or a hub id `org/name[@rev]` (muser.hub: a local path
        wins; cached ids load offline); safetensors only, nothing unpickled."""
        root = Path(resolve_model(str(directory)))
        meta_path = root / "config.json"
        meta = None
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
            except json.JSONDecodeError:
                meta = None
        if not isinstance(meta, dict) or meta.get("model_type") != MODEL_TYPE:
            raise ValueError(
                f"{root} is not a MUSER model folder (needs config.json with model_type 'muser' as written "
                "by MUSER.save_pretrained)"
            )
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(
                f"{root} was saved in MUSER format {meta['format_version']}; this muser reads up to "
                f"{FORMAT_VERSION}: upgrade muser"
            )
        missing = [
            p for p in ("model.safetensors", "text/config.json", "tokenizer") if not (root / p).exists()
        ]
        if missing:
            raise ValueError(f"{root} is an incomplete MUSER model folder: missing {', '.join(missing)}")
        config = from_dict(ModelConfig, meta["model"])
        source = meta.get("text", {}).get("source")
        # A model folder may come from a stranger: never run code it ships (and never ask whether to).
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                root / "tokenizer", local_files_only=True, trust_remote_code=False
            )
            text_config = AutoConfig.from_pretrained(
                root / "text", local_files_only=True, trust_remote_code=False
            )
        except (OSError, ValueError) as err:
            raise ValueError(f"{root} has an unusable text tower ({type(err).__name__}: {err})") from None
        # The text backbone is rebuilt from its own config; its weights come from model.safetensors below.
        backbone = AutoModel.from_config(text_config)
        text = TextEncoder(
            backbone,
            tokenizer,
            config.text_pooling,
            config.text_max_length,
            config.text_freeze_layers,
            source,
        )
        model = cls(config, text)
        weights = root / "model.safetensors"
        try:
            load_model(model, str(weights), strict=True, device=str(map_location))
        except Exception as err:  # shapes or names that do not fit config.json, or a damaged file
            try:
                with safe_open(str(weights), framework="pt") as f:
                    saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
            except Exception:
                raise ValueError(
                    f"{weights} is not a readable safetensors file ({type(err).__name__})"
                ) from None
            # save_model leaves out tensors shared with another (tied weights): not a mismatch
            shared = {k for k in model.state_dict() if k not in saved and "text" in k}
            problem = architecture_mismatch(
                model, {**saved, **{k: model.state_dict()[k].shape for k in shared}}
            )
            raise ValueError(
                f"{weights} does not fit the architecture in {root / 'config.json'} ({problem or err})"
            ) from None
        return model.to(map_location)
