"""Bounded load test of the real model server on loopback: latency, throughput, errors and /metrics cross-check.

Starts ``python -m serving`` on 127.0.0.1 for a model (``--model DIR``; by default a classical model with the
``combined`` featurizer — MiniLM embeddings ⊕ TF-IDF/SVD, the featurizer ``make run`` trains — fit on the bundled
demo prompts, or ``--featurizer tfidf`` for a fast TF-IDF model) and measures:

1. **Load**: ``--requests`` single-text V1 requests at each ``--concurrency`` level (1, 8, 32), with short
   prompts (≤ 20 words) and 2 KB prompts: p50 / p95 / p99 latency, throughput and error count.
2. **Rejections**: a fixed set of malformed requests (bad JSON, wrong content type, too many texts, a V2 binary
   body whose shape does not match its data, ...); every one must be answered 4xx.
3. **Head-of-line blocking**: small-request latency alone, then while one maximum-size request
   (``serving.max_instances`` texts of ``serving.max_chars`` characters) is being classified.
4. **Counters**: ``/metrics`` before and after, cross-checked against what was sent: texts classified
   (``sentinel_predictions_total``), requests answered 4xx (``sentinel_rejected_requests_total``) and 5xx
   (``sentinel_server_errors_total``).

Everything is bounded: a fixed number of requests per phase and ``--phase-seconds`` per phase (requests not sent
by then are reported as not sent). Client and server share this machine's CPUs: read latencies as upper bounds.
Exit status 1 when a request failed unexpectedly or a counter disagrees with what was sent.

    nice -n 10 python benchmarks/load_benchmark.py --requests 200
    python benchmarks/load_benchmark.py --featurizer tfidf --requests 100 --concurrency 1 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import struct
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from serving_benchmark import LONG_SENTENCES, short_prompts  # noqa: E402  (the same prompt generators)

DEMO_CSV = REPO_ROOT / "src" / "prompt_sentinel" / "demo_data" / "demo_prompts.csv"
MODEL_NAME = "load-bench"


def prose(chars: int, rng: random.Random) -> str:
    """Sentences drawn at random, cut to exactly ``chars`` characters."""
    parts: list[str] = []
    size = 0
    while size < chars:
        sentence = rng.choice(LONG_SENTENCES)
        parts.append(sentence)
        size += len(sentence) + 1
    return " ".join(parts)[:chars]


def long_prompts(n: int, chars: int = 2048, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [prose(chars, rng) for _ in range(n)]


# ---- the model -----------------------------------------------------------------------------------------------


def build_benchmark_model(out_dir: Path, featurizer: str) -> Path:
    """A logistic regression on the demo prompts with the given featurizer, saved as a verified artifact."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from prompt_sentinel.config import LabelConfig, SentinelConfig
    from prompt_sentinel.data.loading import load_dataset
    from prompt_sentinel.features import build_featurizer
    from prompt_sentinel.models.base import ModelDescriptor
    from prompt_sentinel.models.sklearn import save_sklearn_artifact
    from prompt_sentinel.text import normalize_text

    cfg = SentinelConfig()
    cfg.featurizer.kind = featurizer
    frame = load_dataset(str(DEMO_CSV), cfg)
    estimator = Pipeline([("features", build_featurizer(cfg.featurizer, cfg.seed)), ("clf", LogisticRegression())])
    estimator.fit([normalize_text(t) for t in frame["text"]], frame["label"])
    descriptor = ModelDescriptor(family="sklearn", model_type="logreg", labels=LabelConfig(), featurizer=featurizer)
    save_sklearn_artifact(estimator, out_dir, descriptor)
    return out_dir


# ---- measurements --------------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    concurrency: int
    planned: int
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    wall_s: float = 0.0
    texts_per_request: int = 1

    @property
    def sent(self) -> int:
        return sum(self.statuses.values()) + self.transport_errors

    @property
    def errors(self) -> int:
        return self.transport_errors + sum(n for status, n in self.statuses.items() if status != 200)

    def pct(self, q: float) -> float | None:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else None


async def run_phase(
    client: httpx.AsyncClient, endpoint: str, texts: list[str], concurrency: int, deadline: float, name: str
) -> Phase:
    """Send one single-text V1 request per text with ``concurrency`` in flight, until done or past ``deadline``."""
    phase = Phase(name, concurrency, len(texts))
    queue: asyncio.Queue[str] = asyncio.Queue()
    for text in texts:
        queue.put_nowait(text)

    async def worker() -> None:
        while time.monotonic() < deadline:
            try:
                text = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            started = time.perf_counter()
            try:
                response = await client.post(endpoint, json={"instances": [text]})
                phase.statuses[response.status_code] += 1
            except httpx.HTTPError:
                phase.transport_errors += 1
            phase.latencies_ms.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    phase.wall_s = time.perf_counter() - started
    return phase


def malformed_requests(url: str, name: str) -> list[tuple[str, str, bytes, dict[str, str]]]:
    """(description, URL, body, headers) of requests every one of which must be answered 4xx."""
    v1, v2 = f"{url}/v1/models/{name}:predict", f"{url}/v2/models/{name}/infer"
    json_ct = {"content-type": "application/json"}
    raw = struct.pack("<I", 3) + b"abc"
    header = json.dumps(
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [5], "parameters": {"binary_data_size": 7}}]}
    ).encode()
    return [
        ("V1 invalid JSON", v1, b"{not json", json_ct),
        ("V1 text/html body", v1, b'{"instances": ["hi"]}', {"content-type": "text/html"}),
        ("V1 no instances", v1, b'{"inputs": ["hi"]}', json_ct),
        ("V1 1,000-deep nesting", v1, b'{"instances":' + b"[" * 1000 + b"]" * 1000 + b"}", json_ct),
        ("V2 wrong datatype", v2, b'{"inputs":[{"name":"text","datatype":"FP32","shape":[1],"data":[1.0]}]}', json_ct),
        (
            "V2 binary shape [5] for 1 element",
            v2,
            header + raw,
            {"content-type": "application/octet-stream", "inference-header-content-length": str(len(header))},
        ),
    ]


async def send_malformed(client: httpx.AsyncClient, url: str, name: str, rounds: int) -> Phase:
    cases = malformed_requests(url, name)
    phase = Phase("malformed", 1, rounds * len(cases))
    started = time.perf_counter()
    for _ in range(rounds):
        for _desc, endpoint, body, headers in cases:
            t0 = time.perf_counter()
            try:
                response = await client.post(endpoint, content=body, headers=headers)
                phase.statuses[response.status_code] += 1
            except httpx.HTTPError:
                phase.transport_errors += 1
            phase.latencies_ms.append((time.perf_counter() - t0) * 1000)
    phase.wall_s = time.perf_counter() - started
    return phase


@dataclass
class HeadOfLine:
    alone: Phase
    during: Phase
    big_status: int | None = None
    big_ms: float = 0.0
    big_texts: int = 0


async def head_of_line(
    client: httpx.AsyncClient, endpoint: str, max_instances: int, max_chars: int, small: int, deadline: float
) -> HeadOfLine:
    """Small-request latency alone, then while one maximum-size request is being served."""
    texts = short_prompts(small, seed=11)
    alone = Phase("small alone", 1, small)
    for text in texts:
        t0 = time.perf_counter()
        try:
            response = await client.post(endpoint, json={"instances": [text]})
            alone.statuses[response.status_code] += 1
        except httpx.HTTPError:
            alone.transport_errors += 1
        alone.latencies_ms.append((time.perf_counter() - t0) * 1000)

    rng = random.Random(5)
    big_texts = [prose(max_chars, rng) for _ in range(max_instances)]
    result = HeadOfLine(alone, Phase("small during max-size", 1, 0), big_texts=len(big_texts))

    async def big() -> None:
        t0 = time.perf_counter()
        try:
            response = await client.post(endpoint, json={"instances": big_texts})
            result.big_status = response.status_code
        except httpx.HTTPError:
            result.big_status = None
        finally:
            result.big_ms = (time.perf_counter() - t0) * 1000

    task = asyncio.create_task(big())
    await asyncio.sleep(0.1)  # let the server receive the large body before probing
    # every probe sent while the large request is still unanswered counts, however long it then waits
    while not task.done() and time.monotonic() < deadline:
        text = texts[len(result.during.latencies_ms) % len(texts)]
        t0 = time.perf_counter()
        try:
            response = await client.post(endpoint, json={"instances": [text]})
            result.during.statuses[response.status_code] += 1
        except httpx.HTTPError:
            result.during.transport_errors += 1
        result.during.latencies_ms.append((time.perf_counter() - t0) * 1000)
    await task
    result.during.planned = result.during.sent
    return result


# ---- /metrics ------------------------------------------------------------------------------------------------


def scrape(url: str) -> dict[str, float]:
    """Totals of the Prompt Sentinel counters (summed over all label sets); absent counters are absent."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=30).text
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.type == "counter" and family.name.startswith("sentinel_"):
            totals.setdefault(f"{family.name}_total", 0.0)  # declared, no label set counted yet: 0
        for sample in family.samples:
            if sample.name.startswith("sentinel_") and sample.name.endswith("_total"):
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def cross_check(before: dict[str, float], after: dict[str, float], phases: list[Phase]) -> list[tuple[str, int, str]]:
    """(counter, expected delta, observed delta or 'missing') for every counter the script can predict."""
    texts_ok = 0
    client_errors = server_errors = 0
    for phase in phases:
        for status, n in phase.statuses.items():
            if status == 200:
                texts_ok += n * phase.texts_per_request
            elif 400 <= status < 500:
                client_errors += n
            elif status >= 500:
                server_errors += n
    expected = {
        "sentinel_predictions_total": texts_ok,
        "sentinel_rejected_requests_total": client_errors,
        "sentinel_server_errors_total": server_errors,
    }
    rows = []
    for name, value in expected.items():
        observed = str(int(after[name] - before.get(name, 0.0))) if name in after else "missing"
        rows.append((name, value, observed))
    return rows


# ---- output --------------------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_load_table(phases: list[Phase]) -> None:
    header = (
        f"{'prompts':<10}{'conc':>5}{'sent':>7}{'of':>6}{'errors':>8}{'p50 ms':>10}{'p95 ms':>10}"
        f"{'p99 ms':>10}{'req/s':>9}"
    )
    print(header)
    print("-" * len(header))
    for p in phases:
        rps = p.sent / p.wall_s if p.wall_s else None
        print(
            f"{p.name:<10}{p.concurrency:>5}{p.sent:>7}{p.planned:>6}{p.errors:>8}{fmt(p.pct(50)):>10}"
            f"{fmt(p.pct(95)):>10}{fmt(p.pct(99)):>10}{fmt(rps):>9}"
        )


def print_hol_table(hol: HeadOfLine, max_chars: int) -> None:
    print(
        f"maximum-size request: {hol.big_texts} texts × {max_chars} characters -> HTTP {hol.big_status} "
        f"in {hol.big_ms:.0f} ms"
    )
    header = f"{'small requests':<24}{'n':>5}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}{'errors':>8}"
    print(header)
    print("-" * len(header))
    for p in (hol.alone, hol.during):
        worst = max(p.latencies_ms) if p.latencies_ms else None
        print(
            f"{p.name:<24}{len(p.latencies_ms):>5}{fmt(p.pct(50)):>10}{fmt(p.pct(95)):>10}{fmt(worst):>10}{p.errors:>8}"
        )


async def run_all(url: str, args: argparse.Namespace) -> tuple[Phase, list[Phase], Phase, HeadOfLine]:
    endpoint = f"{url}/v1/models/{MODEL_NAME}:predict"
    limits = httpx.Limits(max_connections=max(args.concurrency) + 2, max_keepalive_connections=max(args.concurrency))
    phases: list[Phase] = []
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        warm = short_prompts(3, seed=99)  # warm the connection pool and the model
        phases_warm = await run_phase(client, endpoint, warm, 1, time.monotonic() + 60, "warm-up")
        for prompts, make in (("short", short_prompts), ("2KB", long_prompts)):
            for concurrency in args.concurrency:
                texts = make(args.requests, seed=concurrency)
                deadline = time.monotonic() + args.phase_seconds
                print(f"  {prompts} prompts at concurrency {concurrency} ...", file=sys.stderr, flush=True)
                phases.append(await run_phase(client, endpoint, texts, concurrency, deadline, prompts))
        malformed = await send_malformed(client, url, MODEL_NAME, args.malformed_rounds)
        print("  maximum-size request with small requests alongside ...", file=sys.stderr, flush=True)
        hol = await head_of_line(
            client,
            endpoint,
            args.max_instances,
            args.max_chars,
            args.small_requests,
            time.monotonic() + args.phase_seconds,
        )
    return phases_warm, phases, malformed, hol


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model directory to serve (default: build one on the demo data)")
    parser.add_argument("--featurizer", choices=["combined", "tfidf", "embeddings"], default="combined")
    parser.add_argument("--requests", type=int, default=200, help="requests per (prompt set, concurrency) phase")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], help="concurrency levels")
    parser.add_argument("--phase-seconds", type=float, default=90.0, help="time bound of each phase")
    parser.add_argument("--malformed-rounds", type=int, default=5, help="rounds of the malformed-request set")
    parser.add_argument("--small-requests", type=int, default=20, help="small requests measured alone")
    parser.add_argument("--max-instances", type=int, default=64, help="serving.max_instances of the server")
    parser.add_argument("--max-chars", type=int, default=20_000, help="serving.max_chars of the server")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="extra config override for the server, e.g. --set serving.batch_size=16 (repeatable)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the server log and print its path")
    args = parser.parse_args(argv)
    if args.requests < 1 or any(c < 1 for c in args.concurrency):
        parser.error("--requests and --concurrency values must be at least 1")

    from serving.local import start_local_server

    workdir = Path(tempfile.mkdtemp(prefix="load-bench-"))
    model_dir = args.model
    if model_dir is None:
        print(f"building a {args.featurizer} demo model ...", file=sys.stderr, flush=True)
        model_dir = build_benchmark_model(workdir / "model", args.featurizer)
    overrides = [f"serving.max_instances={args.max_instances}", f"serving.max_chars={args.max_chars}"]
    overrides += args.overrides
    extra = ["--enable_latency_logging", "false"] + [a for o in overrides for a in ("--set", o)]
    server = start_local_server(str(model_dir), model_name=MODEL_NAME, extra_args=extra)
    try:
        server.wait_ready(timeout=300)
        before = scrape(server.url)
        warm, phases, malformed, hol = asyncio.run(run_all(server.url, args))
        after = scrape(server.url)
    finally:
        server.stop()
        if args.keep_logs:
            print(f"server log: {server.log_path}", file=sys.stderr)
        else:
            server.log_path.unlink(missing_ok=True)

    big_phase = Phase("max-size", 1, 1, texts_per_request=hol.big_texts)
    if hol.big_status is not None:
        big_phase.statuses[hol.big_status] += 1
    counted = [warm, *phases, malformed, hol.alone, hol.during, big_phase]

    print(f"\nload benchmark: model {model_dir} ({os.cpu_count()} CPUs visible; client and server share them)")
    print(f"server overrides: {' '.join(overrides)}\n")
    print_load_table(phases)
    print()
    print_hol_table(hol, args.max_chars)
    print()
    unexpected_malformed = malformed.transport_errors + sum(
        n for status, n in malformed.statuses.items() if not 400 <= status < 500
    )
    print(f"malformed requests: {malformed.sent} sent, statuses {dict(sorted(malformed.statuses.items()))}")
    print()
    rows = cross_check(before, after, counted)
    print(f"{'counter (delta)':<36}{'expected':>10}{'observed':>10}")
    print("-" * 56)
    mismatches = 0
    for name, expected, observed in rows:
        ok = observed == str(expected)
        mismatches += not ok
        print(f"{name:<36}{expected:>10}{observed:>10}{'' if ok else '  MISMATCH'}")
    failed = sum(p.errors for p in [*phases, hol.alone, hol.during]) + (hol.big_status != 200) + unexpected_malformed
    print(f"\nunexpected failures: {failed}; counter mismatches: {mismatches}")
    return 1 if failed or mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
