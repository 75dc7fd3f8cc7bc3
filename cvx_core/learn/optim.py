"""The optimiser's parameter groups and the head's L2 penalty (what :class:`~cvx_core.learn.trainer.Trainer` steps).

Three groups: the head (its learning rate per weight matrix scaled as ``1 / fan_in``), the
learnable feature parts (``feature_lr``, no weight decay; each frozen or trainable by
``learn_attention`` / ``learn_scales`` / ``learn_temperatures``) and a trained text
encoder (``encoder_lr``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from cvx_core.learn.config import TrainConfig
from cvx_core.learn.selection import HeadChoice

__all__ = ["HEAD_LR_FAN_IN", "head_param_groups", "l2_penalty", "param_groups"]


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW parameter groups of ``model`` (and ``requires_grad`` set on the frozen parts)."""
    groups: dict[str, list[nn.Parameter]] = {"features": [], "encoder": []}
    head_params: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if name.startswith("encoder."):
            p.requires_grad_(not cfg.freeze_encoder)
            if not cfg.freeze_encoder:
                groups["encoder"].append(p)
            continue
        local = name.split("extractor.", 1)[1] if "extractor." in name else None
        if local is None:
            head_params.append(p)
            continue
        if local.startswith("attention."):
            trainable = cfg.learn_attention
        elif local.startswith("aggregator."):
            trainable = cfg.learn_scales
        else:  # change-point detector and any other feature parameter
            trainable = cfg.learn_temperatures
        p.requires_grad_(trainable)
        if trainable:
            groups["features"].append(p)
    out = head_param_groups(head_params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if groups["features"]:
        out.append({"params": groups["features"], "lr": cfg.feature_lr, "weight_decay": 0.0})
    if groups["encoder"]:
        out.append({"params": groups["encoder"], "lr": cfg.encoder_lr, "weight_decay": 0.01})
    return out


def l2_penalty(classifier: Any, head: HeadChoice, *, n_classes: int, n_train: int) -> Callable[[], torch.Tensor]:
    """The head's L2 term ``scale * sum |W|^2 / (2 C n_train)`` (scale 2 for a binary
    linear head, whose two logit rows are ``-w/2, w/2``: this is scikit-learn's binary
    objective, so the warm start is its minimum)."""
    weights = classifier.head_weights()
    scale = 2.0 if (head.head == "linear" and n_classes == 2) else 1.0
    coef = scale / (2.0 * head.c * max(1, n_train))

    def penalty() -> torch.Tensor:
        return coef * sum((w.float() ** 2).sum() for w in weights)

    return penalty


HEAD_LR_FAN_IN = 64  # the head's weight matrices learn at ``lr`` when they read this many inputs


def head_param_groups(params: list[nn.Parameter], *, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups of the head, with a learning rate per weight matrix of
    ``lr * min(1, HEAD_LR_FAN_IN / fan_in)`` (biases: ``lr``).

    Adam moves every weight by about its learning rate per step, whatever the gradient's
    size, so one step moves a logit (or a hidden unit) by up to ``lr * sum_j |h_j|``: with
    thousands of standardised inputs (384-dimensional embeddings give about 10,000) and
    few users the first step of a warm-started head at ``lr`` threw the training loss up
    (0.28 -> 1.38 on 18 users). Scaling the rate as ``1 / fan_in`` (as muP does for Adam's
    input and hidden layers) bounds that move at what ``lr`` does with 64 inputs.
    """
    groups: dict[float, list[nn.Parameter]] = {}
    for p in params:
        scale = min(1.0, HEAD_LR_FAN_IN / p.shape[1]) if p.ndim == 2 else 1.0
        groups.setdefault(lr * scale, []).append(p)
    return [{"params": ps, "lr": g_lr, "weight_decay": weight_decay} for g_lr, ps in groups.items()]
