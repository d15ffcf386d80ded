"""Segmentation: pools with masks, dense features, a model that keeps learning, image-level selectors.

The pieces, in the order a round uses them::

    data = from_segmentation_folder("camvid/train", classes=CAMVID_CLASSES, ignore_index=11)
    feats = DenseEmbedder("resnet50").embed(data.pool)   # any timm backbone (pretrained); cached, float16
    #   offline, the project's MobileNet V1 with its preprocessing: mobilenet_v1("....safetensors")
    model = DenseDecoder(n_classes=11, ignore_index=11).fit(feats, masks)       # masks: None = unlabelled
    probs = model.predict_proba(feats)                                          # (C, h, w) per image
    sel = ClassWeightedUncertainty().select(10, labels=masks, probs=probs, embeddings=feats.pooled)
"""
from .data import (
    CAMVID_CLASSES,
    CAMVID_IGNORE_INDEX,
    CAMVID_RARE,
    MaskError,
    SegmentationData,
    camvid,
    check_mask,
    from_segmentation_folder,
    make_shapes,
    mask_from_png,
    mask_to_png,
    save_segmentation_folder,
)
from .metrics import SegmentationScores, confusion_matrix, segmentation_scores

__all__ = [
    "CAMVID_CLASSES", "CAMVID_IGNORE_INDEX", "CAMVID_RARE", "MaskError", "SegmentationData", "camvid",
    "check_mask", "from_segmentation_folder", "make_shapes", "mask_from_png", "mask_to_png",
    "save_segmentation_folder", "SegmentationScores", "confusion_matrix", "segmentation_scores",
]
from .features import DenseEmbedder, DenseFeatures, mobilenet_v1  # noqa: E402

__all__ += ["DenseEmbedder", "DenseFeatures", "mobilenet_v1"]
from .model import DenseDecoder, DenseLinearProbe, PCAProjection, class_weights_from_counts  # noqa: E402

__all__ += ["DenseDecoder", "DenseLinearProbe", "PCAProjection", "class_weights_from_counts"]
from .select import (  # noqa: E402
    AutoImages,
    ClassTargeted,
    ClassWeightedUncertainty,
    CoverageImages,
    PixelUncertainty,
    RandomImages,
    SegmentationSelector,
    UncertaintyDiversityImages,
    make_selector,
)
from .calibrate import classwise_ece, fit_pixel_temperature, pixel_calibration  # noqa: E402

__all__ += ["AutoImages", "ClassTargeted", "ClassWeightedUncertainty", "CoverageImages", "PixelUncertainty",
            "RandomImages", "SegmentationSelector", "UncertaintyDiversityImages", "make_selector",
            "classwise_ece", "fit_pixel_temperature", "pixel_calibration"]
from .task import SegmentationTask  # noqa: E402

__all__ += ["SegmentationTask"]
