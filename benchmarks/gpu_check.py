"""GPU check: fine-tune the transformer for a fixed number of steps and print throughput, memory and score.

    python benchmarks/gpu_check.py [--steps 200] [--precision bf16] [--base-model bundled:all-MiniLM-L6-v2]

On a CUDA machine it trains with bf16 autocast (``transformer.precision``) and reports peak GPU memory
(``torch.cuda.max_memory_allocated``); on CPU it runs the same steps in fp32 and prints the same columns (peak
memory: the process's max RSS). Data: ``../shared/data/prompts_train.csv`` split 85/15 into train / validation
when present, else the bundled demo prompts. Columns: device, precision, steps, samples/s (optimizer steps only),
peak memory MB, validation custom score (best evaluation, tuned rule), wall seconds.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "prompts_train.csv"
DEMO = REPO / "src" / "prompt_sentinel" / "demo_data" / "demo_prompts.csv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32", "auto"])
    parser.add_argument("--base-model", default="bundled:all-MiniLM-L6-v2")
    parser.add_argument("--data", default=str(SHARED if SHARED.is_file() else DEMO))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sklearn.model_selection import train_test_split

    from prompt_sentinel.config import load_config
    from prompt_sentinel.data.loading import load_dataset
    from prompt_sentinel.training.transformer.trainer import train_transformer

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(
        None,
        [
            "mlflow.enabled=false",
            f"transformer.max_steps={args.steps}",
            f"transformer.batch_size={args.batch_size}",
            f"transformer.max_length={args.max_length}",
            f"transformer.precision={args.precision}",
            f"transformer.eval_every_steps={max(args.steps // 2, 1)}",
            "training.calibration.method=none",
        ],
    )
    df = load_dataset(args.data, cfg)
    train, val = train_test_split(df, test_size=0.15, stratify=df["label"], random_state=cfg.seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        result = train_transformer(
            train.reset_index(drop=True), val.reset_index(drop=True), cfg, Path(tmp) / "model", args.base_model, True
        )
    wall = time.perf_counter() - started
    cuda = torch.cuda.is_available()
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    )
    device = torch.cuda.get_device_name(0) if cuda else "cpu"
    header = "| device | precision | steps | batch | samples/s | peak memory MB | val custom score | wall s |"
    print(header)
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {device} | {result.details['precision']} | {result.details['global_step']} | {args.batch_size} | "
        f"{result.details['samples_per_second']:.1f} | {peak:.0f} {'(GPU)' if cuda else '(RSS)'} | "
        f"{result.selection_score:.4f} | {wall:.1f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
