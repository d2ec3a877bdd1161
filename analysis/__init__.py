"""Shared core of the CN-ZSL toolkit: model and layers, data, training, metrics, command line.

``variance/`` and ``landscape/`` import from here, never from each other.
"""

from analysis.checkpoint import load_checkpoint, save_checkpoint
from analysis.class_standardization import (
    ClassStandardization,
    class_standardize,
    class_statistics,
    frozen_class_statistics,
)
from analysis.data import DataError, ZSLData
from analysis.datasets import DATASETS, load_dataset
from analysis.evaluation import ZSLEvaluation, class_logits, default_seen_logit_scale, evaluate
from analysis.experiment import TrainRun, run_train
from analysis.gbu import AttSplits, load_gbu, read_att_splits, read_res101
from analysis.init import INIT_SCHEMES, init_linear_, weight_variance
from analysis.metrics import (
    GZSLResult,
    ausuc,
    calibrated_predictions,
    gzsl_accuracies,
    harmonic_mean,
    per_class_accuracy,
    zsl_accuracy,
)
from analysis.model import (
    NORMALIZATIONS,
    PRESETS,
    AttributeEmbedderModel,
    ClassifierConfig,
    EmbedderConfig,
    LinearClassifier,
    preset_config,
)
from analysis.normalization import NormalizeScale, normalize_attributes, normalize_scale_logits
from analysis.probe_mode import probe_mode
from analysis.synthetic import (
    SYNTHETIC_PRESETS,
    SyntheticSpec,
    make_semi_synthetic,
    make_synthetic,
    synthesize_features,
    synthetic_spec,
)
from analysis.training import DivergedError, History, StepInfo, TrainConfig, build_model, resolve_device, train, train_model
from analysis.user_model import MODEL_CONTRACT, ModelContractError, ModelSpec, check_model, resolve_model

__all__ = [
    "DATASETS", "INIT_SCHEMES", "MODEL_CONTRACT", "NORMALIZATIONS", "PRESETS", "SYNTHETIC_PRESETS",
    "AttSplits", "AttributeEmbedderModel", "ClassStandardization", "ClassifierConfig", "DataError",
    "DivergedError", "EmbedderConfig", "GZSLResult", "History", "LinearClassifier", "ModelContractError", "ModelSpec",
    "NormalizeScale", "StepInfo",
    "SyntheticSpec", "TrainConfig", "TrainRun", "ZSLData", "ZSLEvaluation",
    "ausuc", "build_model", "calibrated_predictions", "check_model", "class_logits", "class_standardize",
    "class_statistics", "default_seen_logit_scale", "evaluate", "frozen_class_statistics",
    "gzsl_accuracies", "harmonic_mean", "init_linear_", "load_checkpoint", "load_dataset",
    "load_gbu", "make_semi_synthetic", "make_synthetic", "normalize_attributes",
    "normalize_scale_logits", "per_class_accuracy", "preset_config", "probe_mode", "read_att_splits",
    "read_res101", "resolve_device", "resolve_model", "run_train", "save_checkpoint", "synthesize_features",
    "synthetic_spec", "train", "train_model", "weight_variance", "zsl_accuracy",
]
