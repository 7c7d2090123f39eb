from .test_time_augmentation import SemanticSegmentorWithTTA

__all__ = ["SemanticSegmentorWithTTA"]
