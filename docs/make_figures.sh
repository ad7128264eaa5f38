#!/usr/bin/env bash
# Regenerate the README's protocol pictures with `labpcu run` and `labpcu show --plot`
# on the simulated bench (default seed). Run from the repository root.
set -euo pipefail
out=docs/figures
store=$(mktemp -d)/figures.h5
export LABPCU_FILE=$store
labpcu run iv_sweep --device S01,A5-R2C2,S13
labpcu run hysteresis --device S02 --cycles 3
labpcu run ispp --device S06 --targets 20u,50u,80u,30u
labpcu run binary_switch --device S07 --action set
labpcu run configure --device S08 --mode softplus
labpcu run retention --device S06 --component m1
labpcu run weight_statistics --device A1
n=1
for name in iv_sweep hysteresis ispp binary_switch configure retention weight_statistics; do
    labpcu show "$n" --plot "$out/$name.png" > /dev/null
    n=$((n + 1))
done
echo "pictures in $out (runs in $store)"

# the demo's report plots (operators and weight errors), seed 0
demo=$(mktemp -d)
labpcu demo --out "$demo" > /dev/null
for f in multiplier_measured_vs_ideal divider_measured_vs_ideal softmax_measured_vs_ideal \
         vmm_measured_vs_ideal activation weight_errors; do
    cp "$demo/report/$f.png" "$out/demo_$f.png"
done
echo "demo plots in $out (demo folder $demo)"
