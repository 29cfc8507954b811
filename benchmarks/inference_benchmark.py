"""Inference backends side by side: torch vs ONNX Runtime fp32 vs int8, in process and over KServe HTTP.

For the combined-feature logistic regression (MiniLM ⊕ TF-IDF/SVD, or ``--encoder use-multilingual``) and the
fine-tuned MiniLM classifier, per backend (``inference.backend``; every number of one table comes from the same
run, and the backends are
interleaved prompt by prompt — in process and over HTTP, with one server per backend up at once — so a load spike
from a neighbour on a shared machine hits them alike and the ratios stay fair):

* in process: single-prompt ``predict_proba`` p50/p95 and throughput at batch 32 (prompts/s);
* over HTTP (the real ``python -m serving`` on 127.0.0.1, KServe V1, the backend forced with
  ``SENTINEL_INFERENCE_BACKEND``): p50/p95 at concurrency 1 and throughput at concurrency 8;
* short prompts (≤ 32 tokens) and long ones (≥ 256 tokens, truncated at 256 by the models);
* the wall time of ``sentinel evaluate`` on the test set with robustness on (cold: the on-disk embedding cache
  off), per backend, next to today's code (``--baseline-rev``, default the branch point: run from a ``git
  archive`` of that revision with the same interpreter).

Models are built when not given: the logreg is trained on ``--train`` (one search candidate, 2 folds), the MiniLM
is fine-tuned for 3 steps on the demo data (max_length 256). The ONNX encoder export is made once per machine (in
``inference.cache_dir``) before timing. GPU (torch bf16) rows run only where CUDA is present.

    nice -n 10 python benchmarks/inference_benchmark.py --threads 1 --out inference.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from serving_benchmark import concurrent, long_prompts, short_prompts  # noqa: E402

BACKENDS = ("torch", "onnx", "onnx-int8")
TARGETS_P95_MS = {"classical": 8.0, "transformer": 12.0}  # short prompt, HTTP, concurrency 1
MAX_OVERHEAD_MS = 1.5
MAX_EVALUATE_S = 60.0


@dataclass
class Result:
    model: str
    backend: str
    actual: str = ""
    rows: dict[str, dict[str, float | None]] = field(default_factory=dict)  # prompts -> metric -> value


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def interleaved_in_process(models: dict, texts: list[str], batch: int, rounds: int) -> dict[str, dict]:
    """Single-prompt latency and batch throughput of every backend, interleaved prompt by prompt.

    Each prompt is sent to every backend in turn (the order rotating), so a load spike from a neighbour on a
    shared machine hits all backends alike and the ratios stay fair.
    """
    names = list(models)
    for model in models.values():
        model.predict_proba(texts[:4])  # warm
    single: dict[str, list[float]] = {n: [] for n in names}
    for i, text in enumerate(texts):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            started = time.perf_counter()
            models[name].predict_proba([text], batch_size=1)
            single[name].append((time.perf_counter() - started) * 1000)
    chunk = (texts * (batch // len(texts) + 1))[:batch]
    spent = dict.fromkeys(names, 0.0)
    for _ in range(rounds):
        for name in names:
            started = time.perf_counter()
            models[name].predict_proba(chunk, batch_size=batch)
            spent[name] += time.perf_counter() - started
    return {
        n: {"proc_p50": pct(single[n], 50), "proc_p95": pct(single[n], 95), "batch_rps": batch * rounds / spent[n]}
        for n in names
    }


def interleaved_http(model_dir: Path, backends: list[str], prompt_sets: dict[str, list[str]], args) -> dict:
    """One server per backend (all up at once); V1 requests interleaved across them, as in process."""
    import httpx

    from serving.local import start_local_server

    servers = {}
    try:
        for backend in backends:
            env = {"SENTINEL_INFERENCE_BACKEND": backend, "OMP_NUM_THREADS": str(args.threads)}
            if args.cache_dir:
                env["PROMPT_SENTINEL_CACHE"] = args.cache_dir
            servers[backend] = start_local_server(
                str(model_dir), model_name="bench", env=env, extra_args=["--enable_latency_logging", "false"]
            )
        for server in servers.values():
            server.wait_ready(timeout=900)
        out: dict[str, dict[str, dict]] = {b: {} for b in backends}
        clients = {b: httpx.Client(timeout=60) for b in backends}
        try:
            for prompts, texts in prompt_sets.items():
                latencies: dict[str, list[float]] = {b: [] for b in backends}
                for b in backends:  # warm each connection and model
                    for text in texts[:3]:
                        clients[b].post(f"{servers[b].url}/v1/models/bench:predict", json={"instances": [text]})
                for i, text in enumerate(texts):
                    for b in backends[i % len(backends) :] + backends[: i % len(backends)]:
                        started = time.perf_counter()
                        response = clients[b].post(
                            f"{servers[b].url}/v1/models/bench:predict", json={"instances": [text]}
                        )
                        latencies[b].append((time.perf_counter() - started) * 1000)
                        if response.status_code != 200:
                            raise RuntimeError(f"{b} server answered {response.status_code}: {response.text[:200]}")
                per_round = max(args.concurrency, args.throughput_requests // 4)
                many = (texts * (per_round // len(texts) + 1))[:per_round]
                sent, wall = dict.fromkeys(backends, 0), dict.fromkeys(backends, 0.0)
                for _ in range(4):
                    for b in backends:
                        started = time.perf_counter()
                        _, _, errors = asyncio.run(concurrent(servers[b].url, "bench", many, args.concurrency))
                        wall[b] += time.perf_counter() - started
                        sent[b] += len(many)
                        if errors:
                            raise RuntimeError(f"{errors} failed requests against the {b} server")
                for b in backends:
                    out[b][prompts] = {
                        "http_p50": pct(latencies[b], 50),
                        "http_p95": pct(latencies[b], 95),
                        "c8_rps": sent[b] / wall[b],
                    }
        finally:
            for client in clients.values():
                client.close()
        return out
    finally:
        for server in servers.values():
            server.stop()
            server.log_path.unlink(missing_ok=True)


def bench_model(kind: str, model_dir: Path, args) -> list[Result]:
    from prompt_sentinel.config import InferenceConfig
    from prompt_sentinel.models.loading import load_model

    prompt_sets = {"short": short_prompts(args.requests), "long": long_prompts(args.requests, words=300)}
    models = {
        b: load_model(model_dir, inference=InferenceConfig(backend=b, threads=args.threads, cache_dir=args.cache_dir))
        for b in args.backends
    }
    results = {b: Result(kind, b, actual=m.inference_backend or "-") for b, m in models.items()}
    for prompts, texts in prompt_sets.items():
        print(f"  {kind}: in process, {prompts} prompts ...", file=sys.stderr, flush=True)
        for b, row in interleaved_in_process(models, texts, args.batch, args.batch_rounds).items():
            results[b].rows[prompts] = row
    models.clear()
    if not args.skip_http:
        print(f"  {kind}: over HTTP ...", file=sys.stderr, flush=True)
        for b, rows in interleaved_http(model_dir, list(args.backends), prompt_sets, args).items():
            for prompts, row in rows.items():
                results[b].rows[prompts].update(row)
    return list(results.values())


def gpu_rows(model_dir: Path, args) -> list[str]:
    """torch bf16 on CUDA at batch 1 and 64 (only where a GPU is present)."""
    import torch

    if not torch.cuda.is_available():
        return ["GPU (torch bf16) rows: not run, no CUDA device on this machine."]
    from prompt_sentinel.config import InferenceConfig
    from prompt_sentinel.models.loading import load_model

    model = load_model(model_dir, inference=InferenceConfig(backend="torch"))
    model.model.to(torch.bfloat16)
    lines = []
    for batch in (1, 64):
        texts = (short_prompts(64) * 2)[:batch]
        model.predict_proba(texts)
        torch.cuda.synchronize()
        timings = []
        for _ in range(20):
            started = time.perf_counter()
            model.predict_proba(texts, batch_size=batch)
            torch.cuda.synchronize()
            timings.append((time.perf_counter() - started) * 1000)
        lines.append(
            f"GPU bf16 batch {batch}: p50 {pct(timings, 50):.2f} ms, {batch / (pct(timings, 50) / 1000):.0f} prompts/s"
        )
    return lines


def evaluate_wall_time(
    model_dir: Path, data: str, backend: str | None, args, baseline_src: Path | None = None
) -> float:
    """Seconds of one ``sentinel evaluate`` (robustness on, embedding cache off) in a fresh process."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONDONTWRITEBYTECODE": "1"}
    entry = "import sys; from prompt_sentinel.cli import main; sys.argv[0] = 'sentinel'; main()"
    cmd = [sys.executable, "-c", entry, "evaluate", "--model", str(model_dir), "--data", data, "--json"]
    if baseline_src is not None:
        env["PYTHONPATH"] = str(baseline_src)
    else:
        cmd += ["--set", f"inference.backend={backend}", "--set", "inference.embedding_cache=false"]
        cmd += ["--set", f"inference.threads={args.threads}"]
        if args.cache_dir:
            cmd += ["--set", f"inference.cache_dir={args.cache_dir}"]
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.evaluate_timeout)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout)
    label = backend or f"baseline {args.baseline_rev[:10]}"
    print(
        f"  evaluate {model_dir.name} [{label}]: {seconds:.1f}s, custom {report['custom_score']:.4f}", file=sys.stderr
    )
    return seconds


def baseline_source(rev: str, workdir: Path) -> Path:
    target = workdir / "baseline"
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"], capture_output=True, check=True).stdout
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target / "src"


def build_models(workdir: Path, args) -> tuple[Path, Path]:
    from prompt_sentinel.config import load_config

    classical, transformer = args.classical, args.transformer
    if classical is None:
        import pandas as pd

        from prompt_sentinel.training.classical.trainer import train_classical

        cfg = load_config(
            None,
            [
                "mlflow.enabled=false",
                "training.search.n_iter=1",
                "training.search.cv_folds=2",
                f"featurizer.embedding_model={args.encoder}",
            ]
            + ([f"inference.cache_dir={args.cache_dir}"] if args.cache_dir else []),
        )
        print(f"training combined logreg on {args.train} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        classical = workdir / "logreg-combined"
        train_classical("logreg", pd.read_csv(args.train), None, cfg, classical, progress=True)
        print(f"  trained in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    if transformer is None:
        import pandas as pd

        from prompt_sentinel.training.transformer.trainer import train_transformer

        demo = pd.read_csv(REPO / "src" / "prompt_sentinel" / "demo_data" / "demo_prompts.csv")[["text", "label"]]
        cfg = load_config(
            None,
            [
                "mlflow.enabled=false",
                "transformer.max_steps=3",
                "transformer.batch_size=8",
                "transformer.max_length=256",
            ],
        )
        transformer = workdir / "minilm"
        print("fine-tuning MiniLM for 3 steps ...", file=sys.stderr, flush=True)
        train_transformer(demo.iloc[:300], demo.iloc[300:], cfg, transformer, progress=False)
    return Path(classical), Path(transformer)


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render(results: list[Result], evaluate: dict[str, dict[str, float]], notes: list[str], args) -> str:
    lines = [
        f"### Inference backends ({os.cpu_count()} CPUs visible, {args.threads} intra-op thread(s), "
        f"{args.requests} single requests per cell, throughput over {args.throughput_requests} requests)",
        "",
        "| model | backend (ran) | prompts | in-proc p50 ms | in-proc p95 ms | HTTP c=1 p50 ms | HTTP c=1 p95 ms | "
        "HTTP − in-proc p50 ms | batch-32 prompts/s | HTTP c=8 prompts/s | p95 speed-up vs torch (in-proc / HTTP) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    torch_rows = {(r.model, p): row for r in results if r.backend == "torch" for p, row in r.rows.items()}
    for r in results:
        for prompts, row in r.rows.items():
            ref = torch_rows.get((r.model, prompts), {})

            def ratio(key: str, ref=ref, row=row) -> str:
                a, b = ref.get(key), row.get(key)
                return f"{a / b:.2f}x" if a and b else "-"

            overhead = (
                row["http_p50"] - row["proc_p50"] if row.get("http_p50") is not None and row.get("proc_p50") else None
            )
            lines.append(
                f"| {r.model} | {r.backend} ({r.actual}) | {prompts} | {fmt(row.get('proc_p50'), 2)} | "
                f"{fmt(row.get('proc_p95'), 2)} | {fmt(row.get('http_p50'), 2)} | {fmt(row.get('http_p95'), 2)} | "
                f"{fmt(overhead, 2)} | {fmt(row.get('batch_rps'), 0)} | {fmt(row.get('c8_rps'), 0)} | "
                f"{ratio('proc_p95')} / {ratio('http_p95')} |"
            )
    if evaluate:
        lines += ["", "### `sentinel evaluate` on the test set, robustness on (fresh process, embedding cache off)", ""]
        lines += ["| model | run | wall s | speed-up vs baseline |", "|---|---|---:|---:|"]
        for model, runs in evaluate.items():
            base = runs.get("baseline")
            for run, seconds in runs.items():
                lines.append(f"| {model} | {run} | {seconds:.1f} | {f'{base / seconds:.2f}x' if base else '-'} |")
    lines += ["", *notes]
    return "\n".join(lines) + "\n"


def target_notes(results: list[Result], evaluate: dict[str, dict[str, float]]) -> list[str]:
    notes = []
    for r in results:
        short = r.rows.get("short", {})
        if short.get("http_p95") is not None:
            target = TARGETS_P95_MS[r.model]
            verdict = "met" if short["http_p95"] <= target else "MISSED"
            notes.append(
                f"- {r.model}/{r.backend}: short HTTP p95 {short['http_p95']:.1f} ms vs {target:.0f} ms -> {verdict}"
            )
            overhead = short["http_p50"] - short["proc_p50"]
            verdict = "met" if overhead <= MAX_OVERHEAD_MS else "MISSED"
            notes.append(
                f"- {r.model}/{r.backend}: HTTP − in-process p50 {overhead:.2f} ms vs {MAX_OVERHEAD_MS} ms -> {verdict}"
            )
    for model, runs in evaluate.items():
        for run, seconds in runs.items():
            if run != "baseline" and model == "classical":
                verdict = "met" if seconds <= MAX_EVALUATE_S else "MISSED"
                notes.append(f"- evaluate {model}/{run}: {seconds:.0f} s vs {MAX_EVALUATE_S:.0f} s -> {verdict}")
    return notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classical", type=Path, help="combined-feature logreg model dir (default: train one)")
    parser.add_argument("--transformer", type=Path, help="fine-tuned transformer model dir (default: 3-step MiniLM)")
    parser.add_argument(
        "--encoder",
        default="bundled:all-MiniLM-L6-v2",
        help="the combined logreg's sentence encoder (MiniLM: the torch encoder the ONNX backends replace; "
        "'use-multilingual', the default featurizer's, runs on numpy whatever the backend)",
    )
    parser.add_argument("--train", default=str(DEFAULT_DATA / "prompts_train.csv"))
    parser.add_argument("--test", default=str(DEFAULT_DATA / "prompts_test.csv"))
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--models", default="classical,transformer")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (the machine is shared)")
    parser.add_argument("--requests", type=int, default=100, help="single-prompt requests per cell")
    parser.add_argument("--throughput-requests", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batch-rounds", type=int, default=4)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--evaluate", default="classical", help="models to time `sentinel evaluate` on ('' = none)")
    parser.add_argument(
        "--baseline-rev", default=None, help="revision for the baseline evaluate (default: main's merge-base)"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the (slow) baseline evaluate")
    parser.add_argument("--evaluate-timeout", type=int, default=3600)
    parser.add_argument("--cache-dir", default=None, help="inference.cache_dir (ONNX encoder exports)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in args.backends if b not in BACKENDS]
    if unknown or args.threads < 1 or args.requests < 1:
        parser.error(f"--backends from {list(BACKENDS)}, --threads/--requests >= 1 (got {unknown}, {args.threads})")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="inference-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    classical, transformer = build_models(workdir, args)
    models = {"classical": classical, "transformer": transformer}
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]

    # the per-machine encoder export happens once, before anything is timed
    from prompt_sentinel.features import SentenceEmbedder
    from prompt_sentinel.inference.encoder import ensure_encoder_export

    ensure_encoder_export(SentenceEmbedder().model_dir, args.cache_dir)

    results: list[Result] = []
    for kind in wanted:
        print(f"benchmarking {kind} ({models[kind]})", file=sys.stderr, flush=True)
        results += bench_model(kind, models[kind], args)
        if args.out:
            args.out.write_text(render(results, {}, [], args))
    evaluate: dict[str, dict[str, float]] = {}
    for kind in [m.strip() for m in args.evaluate.split(",") if m.strip()]:
        runs = evaluate.setdefault(kind, {})
        if not args.no_baseline:
            rev = (
                args.baseline_rev
                or subprocess.run(
                    ["git", "-C", str(REPO), "merge-base", "HEAD", "main"], capture_output=True, text=True, check=True
                ).stdout.strip()
            )
            args.baseline_rev = rev
            runs["baseline"] = evaluate_wall_time(models[kind], args.test, None, args, baseline_source(rev, workdir))
        for backend in args.backends:
            runs[backend] = evaluate_wall_time(models[kind], args.test, backend, args)
        if args.out:
            args.out.write_text(render(results, evaluate, [], args))
    notes = target_notes(results, evaluate)
    notes += gpu_rows(transformer, args) if "transformer" in wanted else []
    table = render(results, evaluate, notes, args)
    print(table)
    if args.out:
        args.out.write_text(table)
    print(f"models in {workdir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
