#!/usr/bin/env bash
# A hyper-parameter search of MS + OBD-SD on CUB200 by 8 workers at once, one SLURM array task each (one GPU),
# all on one Optuna study in PostgreSQL, submitted with
#   datapath=/data/dml storage=postgresql://user:password@dbhost/optuna sbatch Sample_Runs/slurm_search.sh
# Each task runs --n_trials trials of its own; together they run 8 x 4 = 32. The trials train with 4-fold
# class-disjoint cross-validation of the training classes (the test classes are never evaluated) and report
# val_mAP@R to Optuna's median pruner. Submitted again, the array continues the study: a trial whose task was
# killed is failed and queued again once its worker has given no sign of life for --stale_after minutes.
# Workers sharing a file system may leave out --storage: the journal file of the study folder
# (Training_Results/hyperparameter_search/cub_ms_obdsd) serves them.
# When the array is done, the best setting's final runs (all training classes, tested once after the last epoch):
#   python Hyperparameter_Search.py <the same flags> --report --final_runs 0 1 2 3 4
#SBATCH --job-name=obd_sd_search
#SBATCH --array=0-7
#SBATCH --ntasks=1
#SBATCH --gpus=1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@120
#SBATCH --output=%x-%A_%a.out
set -euo pipefail
datapath=${datapath:?set datapath to the folder holding cub200/}
storage=${storage:?set storage to an Optuna storage URL, e.g. postgresql://user:password@dbhost/optuna}

python Hyperparameter_Search.py --study cub_ms_obdsd --storage "$storage" --n_trials 4 \
    --space kd_lambda=log:100:3000 diffusion_w=0.1:0.9 lr=log:3e-6:3e-5 \
    --dataset cub200 --source "$datapath/cub200" --kernels 8 --n_epochs 150 --cv_folds 4 \
    --bs 112 --samples_per_class 2 --loss multisimilarity_obd_sd --arch resnet50_normalize_frozen --PSD --OBDP
