"""Layers and loss functions shared by several models."""
from .losses import batch_dice_loss, batch_sigmoid_ce_loss, dice_loss, sigmoid_ce_loss  # noqa: F401
from .resize import resize_bilinear  # noqa: F401
