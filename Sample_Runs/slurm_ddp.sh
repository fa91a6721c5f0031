#!/usr/bin/env bash
# OBD-SD on Stanford Online Products over 2 nodes x 4 GPUs (8 processes), submitted with
#   datapath=/data/dml sbatch Sample_Runs/slurm_ddp.sh
# One torchrun per node starts one process per GPU; they meet at the first node of the allocation.
# --bs is the global batch: each of the 8 processes embeds 112 / 8 = 14 images (7 draws of 2 images of a class)
# and the loss sees all 112, as on one GPU. Submitted again, the job continues its newest run (--resume auto).
# SLURM's SIGTERM 120 s before the time limit makes every process stop at the same step and rank 0 save a
# resumable checkpoint; torchrun gives its workers 30 s for that before killing them.
#SBATCH --job-name=obd_sd_sop
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@120
#SBATCH --output=%x-%j.out
set -euo pipefail
datapath=${datapath:?set datapath to the folder holding online_products/}
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)

resume=()
if ls Training_Results/online_products/SOP_MS_obdsd_ddp*/last.pth > /dev/null 2>&1; then
    resume=(--resume auto)
fi

srun torchrun --nnodes="$SLURM_NNODES" --nproc_per_node=4 \
    --rdzv_id="$SLURM_JOB_ID" --rdzv_backend=c10d --rdzv_endpoint="$head_node:29500" \
    main.py --dataset online_products --source "$datapath/online_products" --kernels 8 \
    --n_epochs 100 --bs 112 --samples_per_class 2 --loss multisimilarity_obd_sd \
    --arch resnet50_normalize_frozen --PSD --OBDP --kd_lambda 100.0 --diffusion_w 0.5 --diffusion_tau 0.005 \
    --group SOP_MS_obdsd_ddp --seed 0 ${resume[@]+"${resume[@]}"}
