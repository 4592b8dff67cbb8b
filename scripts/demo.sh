#!/usr/bin/env bash
# Set up, then run the preprocessing job on the embedded sample videos with DirectRunner.
# Output: ./out/demo (records per split, dataset_info.json, failures/). Extra flags go to the job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
. .venv/bin/activate
manifest="$(python -m pipelines.assets path manifest)"
python -m pipelines.preprocess \
  --input "$manifest" \
  --output_dir out/demo \
  --dataset_name perfnet_demo \
  --overwrite \
  --runner DirectRunner \
  "$@"
echo
echo "checking the output against the record contract:"
python -m pipelines.tools.validate out/demo
