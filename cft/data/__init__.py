"""CFT's data pieces: the "cft_semantic" training mapper and the Pascal Context registrations."""
from . import datasets  # noqa: F401  (registers pascal_context_{59,60}_sem_seg_{train,val})
from .dataset_mapper import CFTSemanticDatasetMapper, RandomRescaleInBox  # noqa: F401
