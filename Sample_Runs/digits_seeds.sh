#!/usr/bin/env bash
# MS, MS + PSD and MS + OBD-SD on the built-in digits (a 10-class toy: 5 training, 5 test classes), 5 seeds each,
# and the raw-pixel baseline (the network input itself as the embedding, no training), then their mean ± std table
# (Result_Evaluations.py). CPU-sized, no download; about 15 x the digits demo's time.
#   bash Sample_Runs/digits_seeds.sh                          # runs and table under Training_Results/digits_seeds
#   save_path=/tmp/seeds PYTHON=.venv/bin/python bash Sample_Runs/digits_seeds.sh
# Every run uses fixed seeds and --deterministic; the script refuses to mix its runs with older ones.
set -euo pipefail
cd "$(dirname "$0")/.."
save_path=${save_path:-Training_Results/digits_seeds}
python=${PYTHON:-python}
if [ -e "$save_path/digits" ]; then
    echo "error: $save_path/digits already holds runs; remove it or set save_path to a new folder" >&2
    exit 2
fi

for seed in 0 1 2 3 4; do
    common=(--dataset digits --save_path "$save_path" --seed "$seed" --deterministic)
    "$python" main.py "${common[@]}" --group "digits_MS_s$seed"
    "$python" main.py "${common[@]}" --group "digits_MS_PSD_s$seed" --PSD
    "$python" main.py "${common[@]}" --group "digits_MS_OBDSD_s$seed" --PSD --OBDP
done

"$python" Input_Baseline.py --dataset digits --save_path "$save_path" --group digits_raw_pixels
"$python" Result_Evaluations.py "$save_path/digits" --out "$save_path/table"
