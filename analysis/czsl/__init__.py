"""Continual zero-shot learning (docs/science.md section 6): task splits, the single-head protocol,
EWC-online / MAS-online / A-GEM / multi-task baselines with and without CN, and the
metrics mSA, mUA, mH, mAUC, mJA and forgetting.
"""

from analysis.czsl.experiment import METRICS, CZSLExperiment, format_czsl_table, run_czsl_experiment
from analysis.czsl.methods import (
    EpisodicMemory,
    EWCOnline,
    MASOnline,
    MethodConfig,
    QuadraticAnchorPenalty,
    agem_memory_for,
    agem_project,
    ewc_importance,
    mas_importance,
)
from analysis.czsl.metrics import CZSLSummary, TaskEvaluation, evaluate_time_step, summarize
from analysis.czsl.protocol import METHODS, CZSLConfig, CZSLResult, run_czsl
from analysis.czsl.tasks import DEFAULT_NUM_TASKS, ContinualSplit, continual_split, split_classes_into_tasks

__all__ = [
    "DEFAULT_NUM_TASKS", "METHODS", "METRICS", "CZSLConfig", "CZSLExperiment", "CZSLResult", "CZSLSummary",
    "ContinualSplit", "EWCOnline", "EpisodicMemory", "MASOnline", "MethodConfig", "QuadraticAnchorPenalty",
    "TaskEvaluation", "agem_memory_for", "agem_project", "continual_split", "evaluate_time_step",
    "ewc_importance", "format_czsl_table", "mas_importance", "run_czsl", "run_czsl_experiment",
    "split_classes_into_tasks", "summarize",
]
