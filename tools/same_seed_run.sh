#!/usr/bin/env bash
# A reduced run of every stage, the studies and the toy on real data, for checking that a
# restructuring changes no result: run it before and after, then compare the two listings of
# tools/fingerprints.py (tensors, pictures and report numbers; timings left out).
#   bash tools/same_seed_run.sh DATA OUT     e.g. bash tools/same_seed_run.sh ../shared/data/mnist /tmp/before
set -euo pipefail
DATA=$1; OUT=$2
PY=${PY:-.venv/bin/python}
C=$OUT/ckpt; R=$OUT/reports
S=(--preset smoke --device cpu --seed 0 --no-progress)
X=(--device cpu --seed 0 --no-progress)  # sampling has no preset
run() { "$PY" -m "scripts.$1" "${@:2}" > "$OUT/$1.$(date +%s%N).out"; }
mkdir -p "$OUT"
run prepare_data --data-dir "$DATA" --out "$C/data.json"
run train_classifier --data-dir "$DATA" "${S[@]}" --steps 20 --out "$C/classifier.safetensors" --curves "$R/classifier_curves.png"
run train_vae --data-dir "$DATA" "${S[@]}" --steps 20 --out "$C/vae.safetensors" --grid "$R/vae.png" --curves "$R/vae_curves.png"
run encode_latents --data-dir "$DATA" --vae "$C/vae.safetensors" --device cpu --seed 0 --no-progress --out "$C/latents.safetensors"
run train_diffusion --latents "$C/latents.safetensors" "${S[@]}" --steps 20 --out "$C/unet.safetensors" \
    --fid-every 10 --fid-images 8 --data-dir "$DATA" --classifier "$C/classifier.safetensors" --vae "$C/vae.safetensors" \
    --curves "$R/unet_curves.png"
M=(--unet "$C/unet.safetensors" --vae "$C/vae.safetensors")
run sample "${M[@]}" "${X[@]}" --num-samples 40 --batch-size 8 --out "$C/samples_default.safetensors"
run sample "${M[@]}" "${X[@]}" --sampler ddim --steps 3 --num-samples 40 --batch-size 8 --out "$C/samples_ddim.safetensors"
run sample "${M[@]}" "${X[@]}" --sampler ddpm --steps 5 --num-samples 40 --batch-size 8 --out "$C/samples_ddpm.safetensors"
run sample "${M[@]}" "${X[@]}" --sampler langevin --steps 4 --num-samples 16 --batch-size 8 --digit 3 --out "$C/samples_langevin.safetensors"
run sample "${M[@]}" "${X[@]}" --digit all --strip --num-samples 40 --batch-size 8 --out "$C/samples_digits.safetensors"
run sample "${M[@]}" "${X[@]}" --digit none --num-samples 16 --batch-size 8 --out "$C/samples_none.safetensors"
run evaluate --data-dir "$DATA" --classifier "$C/classifier.safetensors" --vae "$C/vae.safetensors" --num-images 40 \
    --out-dir "$R" --device cpu --seed 0 --no-progress --samples "$C"/samples_{default,ddim,ddpm,digits}.safetensors
CK=(--classifier "$C/classifier.safetensors" --vae "$C/vae.safetensors" --unet "$C/unet.safetensors")
run bench --data-dir "$DATA" "${S[@]}" "${CK[@]}" --latents "$C/latents.safetensors" --num-images 24 \
    --out-dir "$R/bench" --work-dir "$C/bench"
run samplers --data-dir "$DATA" "${X[@]}" "${CK[@]}" --num-images 24 --seeds 0 1 --nfe 2 4 --batch-size 8 --out-dir "$R/samplers"
run training_length --data-dir "$DATA" "${S[@]}" "${CK[@]}" --latents "$C/latents.safetensors" --steps 5 10 \
    --num-images 24 --out-dir "$R/lengths" --work-dir "$C/lengths"
run toy --seed 0 --settings fast --num-samples 500 --data mixture spiral --no-progress --out-dir "$R/toy"
"$PY" tools/fingerprints.py "$OUT" > "$OUT/fingerprints.txt"
wc -l "$OUT/fingerprints.txt"
