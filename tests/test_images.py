"""Container images, checked offline (no Docker engine here): the Dockerfiles parse, pin every base image and
package, install the lock before the source, run as non-root, and start modules that exist."""

from __future__ import annotations

import fnmatch
import functools
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
IMAGES = ("pipeline", "trainer-gpu", "serving", "logger-sink")
KEYWORDS = {
    "FROM", "ARG", "ENV", "RUN", "COPY", "ADD", "WORKDIR", "USER", "ENTRYPOINT", "CMD", "EXPOSE", "LABEL",
    "HEALTHCHECK", "SHELL", "STOPSIGNAL", "VOLUME", "ONBUILD",
}  # fmt: skip


@dataclass
class Instruction:
    keyword: str
    value: str
    line: int
    comments: list[str] = field(default_factory=list)  # the comment block directly above


@dataclass
class Stage:
    image: str  # ARG-substituted
    name: str | None
    instructions: list[Instruction]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """A small Dockerfile parser: line continuations, comments, global ARGs and stages."""
    lines = text.splitlines()
    instructions: list[Instruction] = []
    comments: list[str] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if not stripped:
            comments, i = [], i + 1
            continue
        if stripped.startswith("#"):
            comments.append(stripped)
            i += 1
            continue
        start, parts = i, []
        while True:
            if i >= len(lines):
                raise ValueError(f"line {start + 1}: continuation runs past the end of the file")
            line = lines[i].rstrip()
            i += 1
            if parts and line.strip().startswith("#"):
                continue  # Docker drops comment lines inside a continued instruction
            if line.endswith("\\"):
                parts.append(line[:-1].strip())
                continue
            parts.append(line.strip())
            break
        keyword, _, value = " ".join(p for p in parts if p).partition(" ")
        if keyword.upper() not in KEYWORDS:
            raise ValueError(f"line {start + 1}: unknown instruction {keyword!r}")
        instructions.append(Instruction(keyword.upper(), value.strip(), start + 1, comments))
        comments = []

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", ins.value, re.IGNORECASE)
            if not match:
                raise ValueError(f"line {ins.line}: cannot parse FROM {ins.value!r}")
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: global_args.get(m.group(1), m.group(0)), match.group(1))
            stages.append(Stage(image, match.group(2), [ins]))
        elif not stages:
            if ins.keyword != "ARG":
                raise ValueError(f"line {ins.line}: only ARG may precede the first FROM")
            key, _, default = ins.value.partition("=")
            global_args[key.strip()] = default.strip()
        else:
            stages[-1].instructions.append(ins)
    if not stages:
        raise ValueError("no FROM")
    return global_args, stages


def _dockerfile(name: str) -> tuple[str, dict[str, str], list[Stage]]:
    text = (REPO / "images" / name / "Dockerfile").read_text()
    return (text, *parse_dockerfile(text))


def _locked() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def _tag(image: str) -> str | None:
    if "@sha256:" in image:
        return image.split("@", 1)[1]
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def _dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a parent directory covers its files."""
    rules = []
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        raw = raw.strip()
        if raw and not raw.startswith("#"):
            negated = raw.startswith("!")
            rules.append((negated, raw.lstrip("!").strip("/")))
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negated, pattern in rules:
        plain = pattern.removeprefix("**/")
        if any(
            fnmatch.fnmatchcase(c, pattern) or (plain != pattern and fnmatch.fnmatchcase(c.rsplit("/", 1)[-1], plain))
            for c in candidates
        ):
            excluded = not negated
    return excluded


def test_parser_rejects_what_docker_would():
    with pytest.raises(ValueError, match="unknown instruction"):
        parse_dockerfile("FROM python:3.11.11-slim\nRUNN echo\n")
    with pytest.raises(ValueError, match="past the end"):
        parse_dockerfile("FROM python:3.11.11-slim\nRUN echo \\\n")
    with pytest.raises(ValueError, match="only ARG"):
        parse_dockerfile("USER 1000\nFROM python:3.11.11-slim\n")


@pytest.mark.parametrize("name", IMAGES)
def test_dockerfile_is_multi_stage_and_every_base_image_is_pinned(name):
    _, args, stages = _dockerfile(name)
    assert len(stages) >= 2, "multi-stage: build tools stay out of the final image"
    names = {s.name for s in stages if s.name}
    for stage in stages:
        if stage.image in names:
            continue
        assert "$" not in stage.image, f"unresolved ARG in FROM {stage.image}"
        tag = _tag(stage.image)
        assert tag and tag != "latest", f"FROM {stage.image} is not pinned"
        assert re.search(r"\d+\.\d+\.\d+", tag), f"FROM {stage.image}: pin an exact release, not a floating tag"
    for arg, default in args.items():
        assert ":latest" not in default, arg


@pytest.mark.parametrize("name", IMAGES)
def test_every_pin_has_a_comment_and_every_package_is_locked(name):
    text, _, stages = _dockerfile(name)
    locked = _locked()
    instructions = [i for s in stages for i in s.instructions]
    arg_lines = [line for line in text.splitlines() if line.startswith("ARG ") and ":" in line]
    for line in arg_lines:
        before = text.splitlines()[text.splitlines().index(line) - 1]
        assert before.startswith("#"), f"{name}: no comment on the pin {line!r}"
    for ins in instructions:
        if ins.keyword != "RUN" or "pip install" not in ins.value:
            continue
        for command in re.split(r"&&|;", ins.value):
            if "pip install" not in command:
                continue
            tokens = command.split("pip install", 1)[1].split()
            uses_lock = "-c" in tokens and tokens[tokens.index("-c") + 1] == "constraints.txt"
            skip_next = False
            for token in tokens:
                if skip_next:
                    skip_next = False
                    continue
                if token in ("-c", "-r", "--index-url", "--extra-index-url"):
                    skip_next = True
                    continue
                if token.startswith("-") or token == ".":
                    continue
                if "==" in token:
                    package, version = token.split("==", 1)
                    assert ins.comments and any("pin" in c.lower() for c in ins.comments), (
                        f"{name} line {ins.line}: no comment on the pin {token}"
                    )
                    if package.lower() in locked:
                        assert locked[package.lower()] == version, f"{token} disagrees with constraints.txt"
                else:
                    assert uses_lock and token.lower() in locked, f"{name} line {ins.line}: {token} is not pinned"


@pytest.mark.parametrize("name", IMAGES)
def test_dependencies_come_from_the_lock_before_the_source(name):
    _, _, stages = _dockerfile(name)
    builder = stages[0].instructions
    order = [(i.keyword, i.value) for i in builder]
    copy_lock = next(n for n, (k, v) in enumerate(order) if k == "COPY" and "constraints.txt" in v.split())
    install = next(n for n, (k, v) in enumerate(order) if k == "RUN" and "-c constraints.txt" in v)
    copy_src = next(n for n, (k, v) in enumerate(order) if k == "COPY" and v.split()[0] == "src/")
    assert copy_lock < install < copy_src
    # The project itself goes in without touching the resolved dependencies.
    assert any(k == "RUN" and "--no-deps" in v for k, v in order[copy_src:])


@pytest.mark.parametrize("name", IMAGES)
def test_final_stage_runs_as_a_non_root_user_it_creates(name):
    _, _, stages = _dockerfile(name)
    final = stages[-1].instructions
    users = [i.value for i in final if i.keyword == "USER"]
    assert users, "the final stage must set USER"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) >= 1000, f"USER {users[-1]}: use a numeric non-root uid"
    assert any(i.keyword == "RUN" and f"--uid {user}" in i.value for i in final)
    # Nothing runs as root after the switch.
    last_user = max(n for n, i in enumerate(final) if i.keyword == "USER")
    assert all(i.keyword != "USER" or i.value.split(":")[0] not in ("root", "0") for i in final[last_user:])


@pytest.mark.parametrize("name", IMAGES)
def test_copy_sources_exist_and_are_in_the_build_context(name):
    _, _, stages = _dockerfile(name)
    for ins in (i for s in stages for i in s.instructions if i.keyword in ("COPY", "ADD")):
        args = [a for a in ins.value.split() if not a.startswith("--")]
        if any(a.startswith("--from=") for a in ins.value.split()):
            continue
        for source in args[:-1]:
            assert (REPO / source).exists(), f"{name} line {ins.line}: COPY source {source} does not exist"
            assert not _dockerignore_excludes(source), f"{name}: .dockerignore excludes COPY source {source}"


def test_dockerignore_keeps_secrets_and_bulk_out():
    for path in (".git/config", ".venv/bin/python", "tests/conftest.py", "sentinel-output/x", "mlflow.db",
                 "src/prompt_sentinel/__pycache__/x.pyc", "src/prompt_sentinel.egg-info/PKG-INFO"):  # fmt: skip
        assert _dockerignore_excludes(path), path
    for path in ("src/prompt_sentinel/config.py", "constraints.txt", "manifests/base/kustomization.yaml"):
        assert not _dockerignore_excludes(path), path


def test_makefile_builds_exactly_these_images():
    targets = set(re.findall(r"-f images/([\w-]+)/Dockerfile", (REPO / "Makefile").read_text()))
    assert targets == set(IMAGES) == {p.parent.name for p in (REPO / "images").glob("*/Dockerfile")}


def test_images_agree_with_the_lock_and_the_manifests():
    locked = _locked()
    _, _, gpu = _dockerfile("trainer-gpu")
    assert _tag(gpu[0].image).startswith(locked["torch"] + "-cuda"), "the CUDA base must carry the locked torch"
    for name in ("pipeline", "serving", "logger-sink"):
        _, _, stages = _dockerfile(name)
        assert stages[0].image.split(":")[0] == "python"
        major_minor = ".".join(_tag(stages[0].image).split(".")[:2])
        assert major_minor == f"{sys.version_info.major}.{sys.version_info.minor}", "the lock's interpreter"
    runtime = yaml.safe_load((REPO / "manifests" / "base" / "servingruntime.yaml").read_text())
    container = runtime["spec"]["containers"][0]
    _, _, serving = _dockerfile("serving")
    final = serving[-1].instructions
    assert (
        str(container["securityContext"]["runAsUser"])
        == next(i.value for i in final if i.keyword == "USER").split(":")[0]
    )
    assert str(container["ports"][0]["containerPort"]) in next(i.value for i in final if i.keyword == "EXPOSE").split()
    # The sink's image, port and user match its Deployment.
    sink = yaml.safe_load_all((REPO / "manifests" / "base" / "logger-sink.yaml").read_text())
    (deployment,) = [d for d in sink if d["kind"] == "Deployment"]
    (sink_container,) = deployment["spec"]["template"]["spec"]["containers"]
    _, _, sink_stages = _dockerfile("logger-sink")
    sink_final = sink_stages[-1].instructions
    assert (
        str(sink_container["securityContext"]["runAsUser"])
        == next(i.value for i in sink_final if i.keyword == "USER").split(":")[0]
    )
    assert (
        str(sink_container["ports"][0]["containerPort"])
        in next(i.value for i in sink_final if i.keyword == "EXPOSE").split()
    )
    # The pipeline image carries what the deploy step renders.
    _, _, pipeline = _dockerfile("pipeline")
    assert any(i.keyword == "COPY" and i.value.split()[0] == "manifests/" for i in pipeline[-1].instructions)


@functools.cache
def _module_help(module: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PATH": str(Path(sys.executable).parent)},
    )


@pytest.mark.parametrize(
    "name",
    # The predictor's --help imports kserve, torch and the model stack: ~10 s on a busy 2-core machine.
    [pytest.param(n, marks=pytest.mark.slow) if n == "serving" else n for n in IMAGES],
)
def test_entrypoint_module_starts_in_the_local_venv(name):
    _, _, stages = _dockerfile(name)
    (entrypoint,) = [i.value for i in stages[-1].instructions if i.keyword == "ENTRYPOINT"]
    argv = json.loads(entrypoint)  # exec form: signals reach the process, no shell in between
    assert argv[:2] == ["python", "-m"] and len(argv) == 3
    proc = _module_help(argv[2])
    assert proc.returncode == 0, proc.stderr[-2000:]
    if name == "serving":
        # Every flag the ServingRuntime passes is one the predictor accepts.
        runtime = yaml.safe_load((REPO / "manifests" / "base" / "servingruntime.yaml").read_text())
        for arg in runtime["spec"]["containers"][0]["args"]:
            assert arg.split("=", 1)[0] in proc.stdout, arg
