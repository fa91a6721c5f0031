#!/usr/bin/env bash
# The paper's training runs (OBD-SD, Visual Intelligence 2024), one command each, and an In-Shop run (last).
# Set datapath to the folder that holds cub200/, cars196/, online_products/ (and inshop/), e.g.
#   datapath=/data/dml bash Sample_Runs/SampleRuns.sh
# Every command runs as written with --dry_run appended (tests/test_sample_runs.py checks that).
set -euo pipefail
datapath=${datapath:?set datapath to the folder holding cub200/ cars196/ online_products/}

#-------------------
#   CUB200
#-------------------
### ResNet50, dim = 128 | MS baseline
python main.py --dataset cub200 --kernels 6 --source $datapath/cub200 --n_epochs 150 \
--log_online --project OBD_SD --group CUB_MS \
--seed 0 --gpu 0 --bs 112 --samples_per_class 2 --loss multisimilarity_obd_sd \
--arch resnet50_normalize_frozen

### ResNet50, dim = 128 | MS + PSD only (not a published setting: this repository reuses the OBD-SD run's kd_lambda)
python main.py --dataset cub200 --kernels 6 --source $datapath/cub200 --n_epochs 150 \
--log_online --project OBD_SD --group CUB_MS_psd_e150_lamda-1000.0 \
--kd_lambda 1000.0 --seed 0 --gpu 0 --bs 112 \
--samples_per_class 2 --loss multisimilarity_obd_sd --arch resnet50_normalize_frozen --PSD

### ResNet50, dim = 128 | MS + OBD-SD
python main.py --dataset cub200 --kernels 6 --source $datapath/cub200 --n_epochs 150 \
--log_online --project OBD_SD --group CUB_MS_obdsd_e150_lamda-1000.0_d-w0.3 \
--kd_lambda 1000.0 --diffusion_w 0.3 --seed 0 --gpu 0 --bs 112 \
--samples_per_class 2 --loss multisimilarity_obd_sd --arch resnet50_normalize_frozen --PSD --OBDP

### ResNet50, dim = 512, double pooling | MS + OBD-SD
python main.py --dataset cub200 --kernels 6 --source $datapath/cub200 --n_epochs 150 \
--log_online --project OBD_SD --group CUB_MS_Resnet-512-double_obdsd_e150_lamda-1000.0_d-w0.3 \
--kd_lambda 1000.0 --diffusion_w 0.3 --seed 0 --gpu 0 --bs 112 \
--samples_per_class 2 --loss multisimilarity_obd_sd --arch resnet50_normalize_frozen_double --PSD --OBDP --embed_dim 512

#-------------------
#   CARS196
#-------------------
### ResNet50, dim = 128 | MS baseline
python main.py --dataset cars196 --kernels 6 --source $datapath/cars196 --n_epochs 150 \
--log_online --project OBD_SD --group CARS_MS \
--seed 0 --gpu 0 --bs 112 --samples_per_class 2 --loss multisimilarity_obd_sd \
--arch resnet50_normalize_frozen

### ResNet50, dim = 128 | MS + PSD only (not a published setting: this repository reuses the OBD-SD run's kd_lambda)
python main.py --dataset cars196 --kernels 6 --source $datapath/cars196 --n_epochs 150 \
--log_online --project OBD_SD --group CARS_MS_psd_e150_lamda-75.0 \
--kd_lambda 75.0 --seed 0 --gpu 0 --bs 112 \
--samples_per_class 2 --loss multisimilarity_obd_sd --arch resnet50_normalize_frozen --PSD

### ResNet50, dim = 128 | MS + OBD-SD
python main.py --dataset cars196 --kernels 6 --source $datapath/cars196 --n_epochs 150 \
--log_online --project OBD_SD --group CARS_MS_obdsd_e150_lamda-75.0_d-w0.99 \
--kd_lambda 75.0 --diffusion_w 0.99 --seed 0 --gpu 0 --bs 112 \
--samples_per_class 2 --loss multisimilarity_obd_sd --arch resnet50_normalize_frozen --PSD --OBDP

### ResNet50, dim = 512, double pooling | MS + OBD-SD
python main.py --dataset cars196 --kernels 6 --source $datapath/cars196 --n_epochs 300 \
--log_online --project OBD_SD --group CARS_MS_Resnet-512-double_obdsd_e300_lamda-200.0_d-w0.99 \
--kd_lambda 200.0 --diffusion_w 0.99 --seed 0 --gpu 0 --bs 112 \
--samples_per_class 2 --loss multisimilarity_obd_sd --arch resnet50_normalize_frozen_double --PSD --OBDP --embed_dim 512 \
--tau 200 250 --gamma 0.3

#-------------------
#   SOP
#-------------------
### ResNet50, dim = 128 | MS baseline
python main.py --dataset online_products --kernels 6 --source $datapath/online_products --n_epochs 100 \
--log_online --project OBD_SD --group SOP_MS \
--seed 0 --gpu 0 --bs 112 --samples_per_class 2 --loss multisimilarity_obd_sd \
--arch resnet50_normalize_frozen

### ResNet50, dim = 128 | MS + PSD only (not a published setting: this repository reuses the OBD-SD run's kd_lambda)
python main.py --dataset online_products --kernels 6 --source $datapath/online_products --n_epochs 100 \
--log_online --project OBD_SD --group SOP_MS_psd_e100_lamda-100.0 \
--kd_lambda 100.0 --seed 0 --gpu 0 --bs 112 \
--samples_per_class 2 --loss multisimilarity_obd_sd --arch resnet50_normalize_frozen --PSD

### ResNet50, dim = 128 | MS + OBD-SD
python main.py --dataset online_products --kernels 6 --source $datapath/online_products --n_epochs 100 \
--log_online --project OBD_SD --group SOP_MS_obdsd_e150_lamda-100.0_d-w0.5 \
--kd_lambda 100.0 --diffusion_w 0.5 --diffusion_tau 0.005 --seed 0 --gpu 0 --bs 112 \
--samples_per_class 2 --loss multisimilarity_obd_sd --arch resnet50_normalize_frozen --PSD --OBDP

### ResNet50, dim = 512, double pooling | MS + OBD-SD
python main.py --dataset online_products --kernels 6 --source $datapath/online_products --n_epochs 200 \
--log_online --project OBD_SD --group SOP_MS_Resnet-512-double_obdsd_e200_lamda-200.0_d-w0.5 \
--kd_lambda 200.0 --diffusion_w 0.5 --diffusion_tau 0.005 --seed 0 --gpu 0 --bs 112 \
--samples_per_class 2 --loss multisimilarity_obd_sd --arch resnet50_normalize_frozen_double --PSD --OBDP --embed_dim 512 \
--tau 70 100 --gamma 0.2

#-------------------
#   In-Shop (not in the paper)
#-------------------
### ResNet50, dim = 128 | MS + OBD-SD. The authors published no In-Shop run: these are the paper's SOP OBD-SD
### settings (In-Shop, like SOP, has a few images per class), untuned on In-Shop here.
python main.py --dataset inshop --kernels 6 --source $datapath/inshop --n_epochs 100 \
--log_online --project OBD_SD --group InShop_MS_obdsd_e100_lamda-100.0_d-w0.5 \
--kd_lambda 100.0 --diffusion_w 0.5 --diffusion_tau 0.005 --seed 0 --gpu 0 --bs 112 \
--samples_per_class 2 --loss multisimilarity_obd_sd --arch resnet50_normalize_frozen --PSD --OBDP
