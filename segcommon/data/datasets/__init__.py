"""Dataset registrations: the synthetic toy sets and the standard sets the official configs name."""
from .toy import generate_toy_dataset, register_all_toy, register_toy_datasets  # noqa: F401

register_all_toy()

# Standard datasets the official configs name that detectron2 v0.6 does not register itself
# (it already provides coco_2017_*, coco_2017_*_panoptic, lvis_*, cityscapes_fine_*,
# ade20k_sem_seg_*). Registration is lazy (nothing is read from disk) and idempotent.
from . import ade20k, coco_panoptic, coco_stuff, mapillary_vistas  # noqa: F401,E402
from .ade20k import register_all_ade20k  # noqa: E402
from .coco_panoptic import register_all_coco_panoptic_with_sem_seg  # noqa: E402
from .coco_stuff import register_all_coco_stuff_10k  # noqa: E402
from .mapillary_vistas import register_all_mapillary_vistas  # noqa: E402
from typing import List, Optional  # noqa: E402


def register_all_standard(root: Optional[str] = None) -> List[str]:
    """Register the standard datasets rooted at ``root`` (default ``$DETECTRON2_DATASETS``,
    else ``datasets``) under their official names; returns the names."""
    names = register_all_coco_panoptic_with_sem_seg(root)
    names += register_all_ade20k(root)
    names += register_all_coco_stuff_10k(root)
    names += register_all_mapillary_vistas(root)
    return names


register_all_standard()

from .tiny_coco import register_tiny_coco, register_tiny_coco_sem_seg  # noqa: E402

register_tiny_coco()
register_tiny_coco_sem_seg()
