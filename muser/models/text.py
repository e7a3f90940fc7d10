"""F_txt: the text tower. Wraps any transformers encoder (a local directory or a hub id) or a small BERT
built in code with a WordPiece tokenizer trained on corpus sentences; pools tokens to one vector."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, PreTrainedModel

from muser.hub import resolve_model
from muser.models.tokenizer import Tokenize, train_wordpiece

# Files of a transformers repository that a PyTorch text tower never reads.
OTHER_FORMATS = [
    "*.h5",
    "*.msgpack",
    "*.ot",
    "*.onnx",
    "onnx/*",
    "openvino/*",
    "*.tflite",
    "coreml/*",
    "rust_model*",
]


def _layer_list(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks (encoder.layer in BERT, transformer.layer in DistilBERT, layers...)."""
    stacks = [
        m
        for name, m in model.named_modules()
        if isinstance(m, nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layer", "layers", "h", "block")
    ]
    if not stacks:
        raise ValueError(
            f"cannot find the layer stack of {type(model).__name__} to freeze; use text_freeze_layers=0"
        )
    return max(stacks, key=len)


class TextEncoder(nn.Module):
    """Sentences -> (B, out_dim) pooled token states of a transformers encoder.

    `source` is the directory or hub id of a pretrained encoder, or None for the built-in one.
    """

    def __init__(
        self,
        backbone: PreTrainedModel,
        tokenizer,
        pooling: str = "mean",
        max_length: int = 64,
        freeze_layers: int = 0,
        source: str | None = None,
    ) -> None:
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"text_pooling must be mean or cls, not {pooling!r}")
        # The BERT-style pooler ([CLS] -> dense -> tanh) is unused by our pooling; left in place its
        # parameters would never get gradients, which DistributedDataParallel rejects.
        if getattr(backbone, "pooler", None) is not None:
            backbone.pooler = None
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.tokenize = Tokenize(tokenizer, max_length)  # texts -> input_ids, attention_mask (B, L)
        self.pooling = pooling
        self.max_length = max_length
        self.source = source
        self.out_dim = int(backbone.config.hidden_size)
        if freeze_layers:
            self.freeze(freeze_layers)

    @classmethod
    def build(
        cls,
        texts: Iterable[str] | None = None,
        vocab_size: int = 2000,
        hidden: int = 128,
        layers: int = 2,
        heads: int = 2,
        max_length: int = 64,
        pooling: str = "mean",
        freeze_layers: int = 0,
        tokenizer: Any = None,
    ) -> TextEncoder:
        """A small BERT from a config (random init) with `tokenizer`, or a WordPiece tokenizer trained on
        `texts` when none is given."""
        if tokenizer is None:
            tokenizer = train_wordpiece(texts, vocab_size=vocab_size, max_length=max_length)
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
            max_position_embeddings=max(max_length, 8),
            pad_token_id=tokenizer.pad_token_id,
        )
        backbone = BertModel(config, add_pooling_layer=False)
        return cls(backbone, tokenizer, pooling, max_length, freeze_layers)

    @classmethod
    def from_pretrained(
        cls, name_or_dir: str, max_length: int = 64, pooling: str = "mean", freeze_layers: int = 0
    ) -> TextEncoder:
        """Any transformers encoder: a directory (loaded strictly offline), or a hub id resolved by muser.hub
        (`org/name[@rev]`, cached ids offline); a bare name (bert-base-uncased) goes to transformers."""
        # Only the files transformers reads from an encoder repository, not its other frameworks' weights.
        resolved = resolve_model(name_or_dir, ignore_patterns=OTHER_FORMATS)
        local = Path(resolved).expanduser().is_dir()
        try:
            # Never run code a model folder ships (trust_remote_code), and never prompt about it.
            tokenizer = AutoTokenizer.from_pretrained(
                resolved, local_files_only=local, trust_remote_code=False
            )
            backbone = AutoModel.from_pretrained(resolved, local_files_only=local, trust_remote_code=False)
        except (OSError, ValueError) as err:
            raise ValueError(
                f"cannot load text encoder {name_or_dir!r} ({err.__class__.__name__}); give a local model "
                "directory with config.json and weights (offline), or a reachable hub id"
            ) from err
        return cls(backbone, tokenizer, pooling, max_length, freeze_layers, source=str(name_or_dir))

    def freeze(self, n_layers: int) -> None:
        """Freeze the embeddings and the lowest `n_layers` transformer blocks (no gradients, no updates)."""
        layers = _layer_list(self.backbone)
        if not 0 <= n_layers <= len(layers):
            raise ValueError(f"text_freeze_layers={n_layers} but the text encoder has {len(layers)} layers")
        frozen = [self.backbone.get_input_embeddings(), *layers[:n_layers]]
        if hasattr(self.backbone, "embeddings"):  # position/type embeddings and their LayerNorm too
            frozen.append(self.backbone.embeddings)
        for module in frozen:
            module.requires_grad_(False)

    @property
    def grad_checkpointing(self) -> bool:
        """Whether the transformer blocks are recomputed in the backward (see set_grad_checkpointing)."""
        return any(getattr(m, "gradient_checkpointing", False) is True for m in self.backbone.modules())

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each transformer block in the backward (training only), through transformers' own
        checkpointing: non-reentrant, RNG state preserved, so dropout replays identically."""
        # transformers 5 renamed gradient_* to activation_checkpointing_* (the old names warn until v6).
        if not enabled:
            disable = getattr(self.backbone, "activation_checkpointing_disable", None)
            (disable or self.backbone.gradient_checkpointing_disable)()
            return
        if not self.backbone.supports_gradient_checkpointing:
            raise ValueError(
                f"the text encoder {type(self.backbone).__name__} does not support gradient checkpointing; "
                "train without --grad-checkpointing or choose another text encoder"
            )
        options = {"use_reentrant": False}
        if hasattr(self.backbone, "activation_checkpointing_enable"):
            self.backbone.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
        else:
            self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask: (B, L) -> (B, out_dim) mean over real tokens, or the [CLS] state."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
