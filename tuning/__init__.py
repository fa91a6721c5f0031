"""Hyper-parameter search on Optuna (Hyperparameter_Search.py): the search space, the trials' runs on validation
data, the pruner (fold by fold), the study and its storage, the report."""
