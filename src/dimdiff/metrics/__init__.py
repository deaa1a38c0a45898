"""Sample-quality and reconstruction metrics (FD, KID, precision/recall, multi-scale SWD,
PSNR/SSIM) and the feature networks they use (FID Inception-v3, the digits classifier)."""

from __future__ import annotations

from .digits_classifier import (
    DigitsClassifier,
    classifier_confidence,
    load_digits_classifier,
    predict_logits,
    predicted_label_histogram,
)
from .frechet import feature_statistics, frechet_distance, frechet_distance_eig, frechet_distance_from_features
from .inception import (
    FID_WEIGHTS_FILENAME,
    FID_WEIGHTS_SHA256,
    INCEPTION_WEIGHTS_ENV,
    FeatureNetworkError,
    FIDInceptionV3,
    load_fid_inception,
)
from .kid import kernel_inception_distance
from .precision_recall import precision_recall
from .reconstruction import bits_per_pixel, compression_ratio, psnr, ssim
from .swd import SWD_MEAN_KEY, SWD_SCALE_PREFIX, laplacian_pyramid, sliced_wasserstein_distance, swd_scale_key

__all__ = [
    "FID_WEIGHTS_FILENAME",
    "FID_WEIGHTS_SHA256",
    "INCEPTION_WEIGHTS_ENV",
    "SWD_MEAN_KEY",
    "SWD_SCALE_PREFIX",
    "DigitsClassifier",
    "FIDInceptionV3",
    "FeatureNetworkError",
    "bits_per_pixel",
    "classifier_confidence",
    "compression_ratio",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_eig",
    "frechet_distance_from_features",
    "kernel_inception_distance",
    "laplacian_pyramid",
    "load_digits_classifier",
    "load_fid_inception",
    "precision_recall",
    "predict_logits",
    "predicted_label_histogram",
    "psnr",
    "sliced_wasserstein_distance",
    "ssim",
    "swd_scale_key",
]
