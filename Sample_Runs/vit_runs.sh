#!/usr/bin/env bash
# ViT-S/16 with DINO weights (timm's vit_small_patch16_224.dino), MS and MS + OBD-SD, on CUB200, CARS196, SOP and
# In-Shop. Not runs of the paper: the authors trained ResNet50s only.
# Hyper-parameters from the ViT metric-learning literature, untuned here: AdamW at lr 1e-5 with weight decay 0.01
# and the gradient norm clipped at 3 (Hyp-ViT, Ermolov et al. CVPR 2022: htdt/hyp_metric), 224 px, 128-D
# embeddings, 2 images per class; bfloat16 autocast (--amp; PyTorch's scaled-dot-product attention on GPUs).
# The OBD-SD settings (--kd_lambda, --diffusion_w, --diffusion_tau) are the paper's ResNet50 ones of each dataset;
# In-Shop has none in the paper and takes SOP's.
# Weights: timm downloads them (Hugging Face Hub); offline, add --pretrained_path dino_deitsmall16_pretrain.pth
# (DINO's own file, https://dl.fbaipublicfiles.com/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth).
# Set datapath to the folder that holds cub200/, cars196/, online_products/ and inshop/, e.g.
#   datapath=/data/dml bash Sample_Runs/vit_runs.sh
# Every command runs as written with --dry_run appended (tests/test_sample_runs.py checks that).
set -euo pipefail
datapath=${datapath:?set datapath to the folder holding cub200/ cars196/ online_products/ inshop/}

#-------------------
#   CUB200
#-------------------
### ViT-S/16 DINO, dim = 128 | MS
python main.py --dataset cub200 --kernels 6 --source $datapath/cub200 --n_epochs 50 \
--log_online --project OBD_SD --group CUB_ViT-S-DINO_MS \
--seed 0 --gpu 0 --bs 112 --samples_per_class 2 --loss multisimilarity_obd_sd \
--arch vit_small_patch16_224.dino_normalize --optim adamw --lr 1e-5 --decay 0.01 --clip_grad 3 --amp

### ViT-S/16 DINO, dim = 128 | MS + OBD-SD
python main.py --dataset cub200 --kernels 6 --source $datapath/cub200 --n_epochs 50 \
--log_online --project OBD_SD --group CUB_ViT-S-DINO_MS_obdsd_e50_lamda-1000.0_d-w0.3 \
--kd_lambda 1000.0 --diffusion_w 0.3 --seed 0 --gpu 0 --bs 112 --samples_per_class 2 --loss multisimilarity_obd_sd \
--arch vit_small_patch16_224.dino_normalize --optim adamw --lr 1e-5 --decay 0.01 --clip_grad 3 --amp --PSD --OBDP

#-------------------
#   CARS196
#-------------------
### ViT-S/16 DINO, dim = 128 | MS
python main.py --dataset cars196 --kernels 6 --source $datapath/cars196 --n_epochs 50 \
--log_online --project OBD_SD --group CARS_ViT-S-DINO_MS \
--seed 0 --gpu 0 --bs 112 --samples_per_class 2 --loss multisimilarity_obd_sd \
--arch vit_small_patch16_224.dino_normalize --optim adamw --lr 1e-5 --decay 0.01 --clip_grad 3 --amp

### ViT-S/16 DINO, dim = 128 | MS + OBD-SD
python main.py --dataset cars196 --kernels 6 --source $datapath/cars196 --n_epochs 50 \
--log_online --project OBD_SD --group CARS_ViT-S-DINO_MS_obdsd_e50_lamda-75.0_d-w0.99 \
--kd_lambda 75.0 --diffusion_w 0.99 --seed 0 --gpu 0 --bs 112 --samples_per_class 2 --loss multisimilarity_obd_sd \
--arch vit_small_patch16_224.dino_normalize --optim adamw --lr 1e-5 --decay 0.01 --clip_grad 3 --amp --PSD --OBDP

#-------------------
#   SOP
#-------------------
### ViT-S/16 DINO, dim = 128 | MS
python main.py --dataset online_products --kernels 6 --source $datapath/online_products --n_epochs 30 \
--log_online --project OBD_SD --group SOP_ViT-S-DINO_MS --evaluate_every 5 \
--seed 0 --gpu 0 --bs 112 --samples_per_class 2 --loss multisimilarity_obd_sd \
--arch vit_small_patch16_224.dino_normalize --optim adamw --lr 1e-5 --decay 0.01 --clip_grad 3 --amp

### ViT-S/16 DINO, dim = 128 | MS + OBD-SD
python main.py --dataset online_products --kernels 6 --source $datapath/online_products --n_epochs 30 \
--log_online --project OBD_SD --group SOP_ViT-S-DINO_MS_obdsd_e30_lamda-100.0_d-w0.5 --evaluate_every 5 \
--kd_lambda 100.0 --diffusion_w 0.5 --diffusion_tau 0.005 --seed 0 --gpu 0 --bs 112 --samples_per_class 2 \
--loss multisimilarity_obd_sd \
--arch vit_small_patch16_224.dino_normalize --optim adamw --lr 1e-5 --decay 0.01 --clip_grad 3 --amp --PSD --OBDP

#-------------------
#   In-Shop
#-------------------
### ViT-S/16 DINO, dim = 128 | MS
python main.py --dataset inshop --kernels 6 --source $datapath/inshop --n_epochs 30 \
--log_online --project OBD_SD --group InShop_ViT-S-DINO_MS --evaluate_every 5 \
--seed 0 --gpu 0 --bs 112 --samples_per_class 2 --loss multisimilarity_obd_sd \
--arch vit_small_patch16_224.dino_normalize --optim adamw --lr 1e-5 --decay 0.01 --clip_grad 3 --amp

### ViT-S/16 DINO, dim = 128 | MS + OBD-SD
python main.py --dataset inshop --kernels 6 --source $datapath/inshop --n_epochs 30 \
--log_online --project OBD_SD --group InShop_ViT-S-DINO_MS_obdsd_e30_lamda-100.0_d-w0.5 --evaluate_every 5 \
--kd_lambda 100.0 --diffusion_w 0.5 --diffusion_tau 0.005 --seed 0 --gpu 0 --bs 112 --samples_per_class 2 \
--loss multisimilarity_obd_sd \
--arch vit_small_patch16_224.dino_normalize --optim adamw --lr 1e-5 --decay 0.01 --clip_grad 3 --amp --PSD --OBDP
