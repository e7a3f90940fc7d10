"""Tri-modal contrastive pretraining: the loop, optimiser and schedule, checkpoints, live display."""

from muser.train.trainer import NonFiniteLossError, pretrain

__all__ = ["NonFiniteLossError", "pretrain"]
