"""
Constant category tables (names, dataset ids, colours) of the standard datasets.

The modules here hold data only: no registration happens on import, and their only import is
detectron2's ``builtin_meta`` (for the category names detectron2 already ships), so the
preparation scripts in ``tools/datasets/`` can load them by file path without importing the
rest of the project.

* :mod:`.ade20k`: ADE20K-150 colours and thing/stuff split, the 100 ADE20K instance classes.
* :mod:`.ade20k_full`: the 847 ADE20K-full classes (MaskFormer's selection) with their ADE ids.
* :mod:`.coco_stuff`: the 171 COCO-Stuff classes.
* :mod:`.mapillary_vistas`: the 65 Mapillary Vistas v1.2 classes.
"""
