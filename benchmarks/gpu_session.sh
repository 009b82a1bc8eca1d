#!/usr/bin/env bash
# Every GPU figure BENCHMARKS.md asks for, in as few runs as a time-limited GPU lease allows.
#
#   bash benchmarks/gpu_session.sh generation [RESULTS_DIR]   # LLaVA-1.5-7B and Qwen2.5-VL-7B, eager and compiled (~8 min on an H100)
#   bash benchmarks/gpu_session.sh training   [RESULTS_DIR]   # LoRA r128 on LLaVA-1.5-7B, with and without checkpointing; CLIP add (~5 min)
#
# Each benchmark prints JSON lines; they go to RESULTS_DIR/<name>.jsonl (default:
# benchmark-results/), one file per run, so a run cut short keeps what it wrote.
# The random 7B models are built once per part and reused by its runs. SIZE=tiny
# runs the same steps with tiny models, anywhere, to check the script itself.
set -uo pipefail
size=${SIZE:-7b}
part=${1:?say which part: generation or training}
results=${2:-benchmark-results}
mkdir -p "$results"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
here=$(cd "$(dirname "$0")" && pwd)
export PYTHONUNBUFFERED=1
# this checkout's rap, installed or not (a GPU machine may have the libraries but not rap), and the
# tests' support package, whose random checkpoints the benchmarks build
export PYTHONPATH="$here/../src:$here/../tests${PYTHONPATH:+:$PYTHONPATH}"

run() {  # run NAME SECONDS COMMAND...: the command's JSON lines to RESULTS_DIR/NAME.jsonl, its log beside them
    local name=$1 seconds=$2
    shift 2
    echo "== $name"
    timeout "$seconds" "$@" 2>"$results/$name.log" | tee "$results/$name.jsonl"
    echo "== $name: exit ${PIPESTATUS[0]}"
}

case $part in
generation)
    for arch in llava qwen2.5-vl; do
        model=(--arch "$arch" --size "$size" --dtype bfloat16 --model-dir "$scratch/$arch" --repeats 2 --new-tokens 64)
        run "generation-$arch-eager" 200 python3 "$here/generation_latency.py" "${model[@]}"
        run "generation-$arch-compiled" 220 python3 "$here/generation_latency.py" "${model[@]}" --static-cache --compile
        rm -rf "${scratch:?}/$arch"
    done
    ;;
training)
    run training-lora-r128 150 python3 "$here/train_throughput.py" --size "$size"
    run training-lora-r128-checkpointing 150 python3 "$here/train_throughput.py" --size "$size" --checkpointing
    clip=$([ "$size" = tiny ] && echo tiny || echo vit-l-14-336)
    python3 -c "import sys, torch; from support.random_models import save_random_clip
save_random_clip(sys.argv[1], sys.argv[2], 'cuda' if torch.cuda.is_available() else 'cpu')" "$scratch/clip" "$clip"
    run store-ops-clip 120 python3 "$here/store_ops.py" "$here/../tests/photos" --encoder "clip:$scratch/clip" --singles 10
    ;;
*)
    echo "unknown part $part: generation or training" >&2
    exit 2
    ;;
esac
