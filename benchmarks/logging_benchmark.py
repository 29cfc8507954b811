"""Prediction logging cost: logger sink throughput and the latency logging adds to the predictor.

* **sink**: the real ``python -m serving.logger_sink`` on loopback; ``--exchanges`` request/response CloudEvent
  pairs (one text each, as KServe's logger sends them) from ``--clients`` concurrent clients; records/s from the
  first event to the last record on disk. Also the writer alone (in-process, no HTTP): records/s it serializes and
  appends.
* **predictor**: two real model servers on the same model, one with ``--log_dir`` (text stored: the costliest
  setting), one without; single-text V1 requests alternate between them, so both see the same machine load;
  p50/p95 of each and the on/off ratio.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/logging_benchmark.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.fixtures builds the demo model

ANSWER = {
    "predictions": [{"label": "benign", "label_id": 0, "decision": "allow",
                     "scores": {"benign": 0.9, "suspicious": 0.05, "malicious": 0.05}}],
    "model_version": "v1",
}  # fmt: skip
PROMPT = "Summarize this article about renewable energy in three sentences, please, for a newsletter."


def _headers(event_id: str, kind: str) -> dict[str, str]:
    return {
        "ce-id": event_id,
        "ce-type": f"org.kubeflow.serving.inference.{kind}",
        "ce-specversion": "1.0",
        "ce-source": "bench",
        "ce-inferenceservicename": "prompt-sentinel",
        "content-type": "application/json",
    }


def _count(logs: Path) -> int:
    from prompt_sentinel.errors import DataError
    from prompt_sentinel.monitoring.logstore import read_logs

    try:
        return len(read_logs(str(logs)).records)
    except DataError:
        return 0


def sink_throughput(exchanges: int, clients: int) -> dict[str, float]:
    from prompt_sentinel.monitoring.logstore import wait_for
    from serving.local import free_port

    with tempfile.TemporaryDirectory(prefix="sink-bench-") as tmp:
        logs, port = Path(tmp, "logs"), free_port()
        command = [sys.executable, "-m", "serving.logger_sink", "--log-dir", str(logs), "--port", str(port)]
        command += ["--host", "127.0.0.1", "--set", "monitoring.flush_interval_s=0.5"]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: _healthy(url), timeout=60)
            request = json.dumps({"instances": [PROMPT]}).encode()
            response = json.dumps(ANSWER).encode()

            def send(ids: range) -> None:
                with httpx.Client(base_url=url, timeout=30) as client:
                    for i in ids:
                        client.post("/", content=request, headers=_headers(f"e{i}", "request"))
                        client.post("/", content=response, headers=_headers(f"e{i}", "response"))

            chunks = [range(c, exchanges, clients) for c in range(clients)]
            started = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(send, chunks))
            sent = time.perf_counter() - started
            wait_for(lambda: _count(logs) >= exchanges, timeout=120, interval=0.2)
            done = time.perf_counter() - started
        finally:
            process.terminate()
            process.wait(timeout=30)
    return {"records": exchanges, "events_per_s": 2 * exchanges / sent, "records_per_s": exchanges / done}


def writer_throughput(records: int) -> float:
    from prompt_sentinel.monitoring.logstore import PredictionLogWriter
    from prompt_sentinel.monitoring.records import TextPolicy, build_records

    policy = TextPolicy(True, b"bench")
    batch = [build_records([PROMPT], ["benign"], ["allow"], [ANSWER["predictions"][0]["scores"]], model="m",
                           model_version="v1", protocol="v1", request_id=f"r{i}", source="sink", policy=policy)[0]
             for i in range(1000)]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="writer-bench-") as tmp:
        writer = PredictionLogWriter(tmp, start_thread=False)
        started = time.perf_counter()
        for _ in range(records // 1000):
            writer.write(batch)
            writer.flush()
        writer.close()
        return (records // 1000) * 1000 / (time.perf_counter() - started)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        time.sleep(0.2)
        return False


def predictor_overhead(requests: int) -> dict[str, float]:
    from serving.local import start_local_server
    from tests.fixtures.demo_models import build_sklearn_demo_model

    with tempfile.TemporaryDirectory(prefix="log-bench-") as tmp:
        model = build_sklearn_demo_model(Path(tmp, "model"))
        quiet = ["--enable_latency_logging", "false"]
        logging_args = [*quiet, "--log_dir", str(Path(tmp, "logs")), "--set", "monitoring.store_text=true"]
        on = start_local_server(str(model), model_name="m", extra_args=logging_args)
        off = start_local_server(str(model), model_name="m", extra_args=quiet)
        try:
            on.wait_ready(180)
            off.wait_ready(180)
            timings: dict[str, list[float]] = {"on": [], "off": []}
            with httpx.Client(timeout=30) as client:
                for i in range(requests + 50):
                    for name, server in (("on", on), ("off", off)) if i % 2 else (("off", off), ("on", on)):
                        started = time.perf_counter()
                        answer = client.post(f"{server.url}/v1/models/m:predict", json={"instances": [f"{PROMPT} {i}"]})
                        elapsed = time.perf_counter() - started
                        answer.raise_for_status()
                        if i >= 50:  # warm-up
                            timings[name].append(elapsed * 1000)
        finally:
            on.stop()
            off.stop()
        logged = _count(Path(tmp, "logs"))
    p = {k: (float(np.percentile(v, 50)), float(np.percentile(v, 95))) for k, v in timings.items()}
    return {"p50_off": p["off"][0], "p95_off": p["off"][1], "p50_on": p["on"][0], "p95_on": p["on"][1],
            "p95_ratio": p["on"][1] / p["off"][1], "logged": logged}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exchanges", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args(argv)
    writer = writer_throughput(50_000)
    sink = sink_throughput(args.exchanges, args.clients)
    overhead = predictor_overhead(args.requests)
    print("\n## Logger sink (loopback, one text per exchange)\n")
    print("| what | value |\n|---|---:|")
    print(f"| writer alone (serialize + append, in-process) | {writer:,.0f} records/s |")
    print(f"| sink: CloudEvents accepted ({args.clients} clients) | {sink['events_per_s']:,.0f} events/s |")
    print(
        f"| sink: records on disk, end to end ({args.exchanges} exchanges) | {sink['records_per_s']:,.0f} records/s |"
    )
    print(f"\n## Predictor latency with and without --log_dir ({args.requests} alternating single-text V1 requests)\n")
    print("| | p50 ms | p95 ms |\n|---|---:|---:|")
    print(f"| logging off | {overhead['p50_off']:.2f} | {overhead['p95_off']:.2f} |")
    print(f"| logging on (text stored) | {overhead['p50_on']:.2f} | {overhead['p95_on']:.2f} |")
    print(f"\np95 ratio on/off: {overhead['p95_ratio']:.3f} ({overhead['logged']} records logged)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
