"""ONNX export, int8 quantization, verified ONNX Runtime sessions and a light tokenizer for them.

Export uses ``torch.onnx.export(dynamo=True)`` (the torch.export-based exporter; it needs ``onnxscript``) with a
dynamic batch and sequence axis, opset 18, weights inside the single ``.onnx`` file. ``optimum`` is not used: it
would add a second model-loading stack (and its own transformers pin) for what is ~30 lines here.

Quantization is ONNX Runtime's dynamic int8 quantization with per-channel weight scales: per-tensor scales
moved MiniLM embeddings down to cosine 0.88 with torch's, per-channel ones keep it above 0.98.

:class:`OnnxSession` opens a file with graph optimizations on and a fixed number of intra-op threads, and checks
what the caller will feed and read (input names, output width) at load time, naming the file when it does not
match. :class:`FastTokenizer` runs the Hugging Face tokenizer's Rust backend directly (truncation and padding
configured once), producing int64 arrays without the Python-side bookkeeping of ``tokenizer(...)``.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prompt_sentinel.errors import ModelFormatError
from prompt_sentinel.inference.backends import inference_threads, require_onnxruntime

log = logging.getLogger(__name__)

OPSET = 18


# --- export ---------------------------------------------------------------------------------------------------


def export_to_onnx(module: Any, example: dict[str, Any], output_name: str, path: Path) -> Path:
    """Export ``module(**example)`` to ``path`` with dynamic batch and sequence axes on every input."""
    import torch
    from torch.export import Dim

    names = list(example)
    batch, seq = Dim("batch", min=1, max=4096), Dim("sequence", min=1, max=8192)
    dynamic = {name: {0: batch, 1: seq} for name in names}
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    sink = io.StringIO()
    # the exporter narrates each stage on stdout and warns about dims it renames and torchvision ops it skips;
    # none of it is actionable here
    with (
        torch.inference_mode(False),
        torch.no_grad(),
        contextlib.redirect_stdout(sink),
        _quiet_loggers("torch.onnx", "torch.export", "torch._export", "onnxscript", "onnx_ir"),
    ):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                args=(),
                kwargs=example,
                input_names=names,
                output_names=[output_name],
                dynamic_shapes=dynamic,
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
            program.save(str(path), external_data=False)
    return path


def quantize_int8(source: Path, target: Path) -> Path:
    """Dynamic int8 quantization (per-channel weight scales) of ``source`` into ``target``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target.parent.mkdir(parents=True, exist_ok=True)
    with _quiet_loggers(""):  # it advises pre-processing on the root logger, for every model
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)
    return target


@contextlib.contextmanager
def _quiet_loggers(*names: str):  # type: ignore[no-untyped-def]
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


# --- sessions -------------------------------------------------------------------------------------------------


class OnnxSession:
    """An ONNX Runtime session over one verified file, checked against what its caller feeds and reads."""

    def __init__(
        self,
        path: Path,
        input_names: Sequence[str],
        output_width: int | None = None,
        threads: int | None = None,
        backend: str = "onnx",
    ) -> None:
        require_onnxruntime(backend)
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFormatError(f"{self.path}: ONNX file is missing")
        self.threads = inference_threads(threads)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # warnings about unused initializers etc. are noise in serving logs
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/InvalidProtobuf types
            raise ModelFormatError(f"{self.path}: not a loadable ONNX model ({type(exc).__name__}: {exc})") from exc
        graph_inputs = [i.name for i in self.session.get_inputs()]
        missing = [n for n in graph_inputs if n not in input_names]
        unused = [n for n in input_names if n not in graph_inputs]
        if missing or unused:
            raise ModelFormatError(
                f"{self.path}: the graph takes inputs {graph_inputs} but the tokenizer provides {list(input_names)}"
                f" (missing: {missing}, unexpected: {unused}); the ONNX file does not belong to this model"
            )
        self.input_names = graph_inputs
        outputs = self.session.get_outputs()
        if len(outputs) != 1:
            raise ModelFormatError(f"{self.path}: expected one output, the graph has {[o.name for o in outputs]}")
        self.output_name = outputs[0].name
        width = outputs[0].shape[-1] if outputs[0].shape else None
        if output_width is not None and isinstance(width, int) and width != output_width:
            raise ModelFormatError(
                f"{self.path}: the graph outputs {width} values per row but {output_width} are expected "
                "(label count / embedding size); the ONNX file does not belong to this model"
            )
        self.output_width = width if isinstance(width, int) else output_width

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run([self.output_name], {n: feed[n] for n in self.input_names})[0]


# --- tokenization ---------------------------------------------------------------------------------------------


class FastTokenizer:
    """The Rust tokenizer behind a Hugging Face fast tokenizer, with truncation at ``max_length``.

    Produces exactly ``tokenizer(texts, truncation=True, max_length=max_length)``'s ids (the same special tokens
    and truncation strategy) as int64 arrays, padded per batch with the tokenizer's pad id.
    """

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        from tokenizers import Tokenizer

        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ModelFormatError(f"{type(tokenizer).__name__} has no fast (Rust) tokenizer; ONNX needs one")
        # a private copy: the shared tokenizer's padding/truncation state must not change under other users
        self._tok = Tokenizer.from_str(backend.to_str())
        self._tok.no_padding()
        self._tok.enable_truncation(max_length)
        self.max_length = max_length
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        self.input_names = [
            n for n in tokenizer.model_input_names if n in ("input_ids", "attention_mask", "token_type_ids")
        ]

    def encode(self, texts: Sequence[str]) -> list[Any]:
        """Unpadded encodings (``.ids``, ``.type_ids``), one per text."""
        return self._tok.encode_batch(list(texts))

    def pad(self, encodings: Sequence[Any]) -> dict[str, np.ndarray]:
        """int64 arrays (rows × longest) for the model's inputs; padding is masked out."""
        rows = len(encodings)
        width = max((len(e.ids) for e in encodings), default=1)
        ids = np.full((rows, width), self.pad_id, dtype=np.int64)
        mask = np.zeros((rows, width), dtype=np.int64)
        types = np.zeros((rows, width), dtype=np.int64) if "token_type_ids" in self.input_names else None
        for r, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[r, :n] = enc.ids
            mask[r, :n] = 1
            if types is not None:
                types[r, :n] = enc.type_ids
        feed = {"input_ids": ids, "attention_mask": mask}
        if types is not None:
            feed["token_type_ids"] = types
        return feed


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first (as the torch paths do)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    return [order[i : i + batch_size] for i in range(0, len(order), max(batch_size, 1))]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
