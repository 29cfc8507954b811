"""Stage 6 — select: quality gates, ranking and the champion-vs-challenger rule over every evaluation.

Inputs are the classical evaluations (``dsl.Collected`` from the fan-out) and, when the transformer branch ran,
its evaluation URI (``dsl.OneOf``) and the ensemble step's (both empty otherwise). When the registry already has a
``champion`` for ``model_name`` it is re-evaluated on this run's test split, so the comparison is paired on the
same prompts.

Outputs: ``selection`` (``selection.json``, ``results.csv``, ``report.html``, ``candidates.json``, the
champion's evaluation, ``winner_evaluation.json``), ``champion`` (a copy of the winning model directory; empty
when nothing is promoted), ``report`` (the HTML report for the KFP UI), ``summary`` (Markdown verdict) and
``metrics``. Returns ``promoted``, which gates
push and deploy. Never cached: the verdict depends on the registry's current champion.
"""

from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components._base import sentinel_component


@sentinel_component()
def select_model(
    config_json: str,
    registry_root: str,
    model_name: str,
    results_uri: str,
    splits: Input[Dataset],
    evaluations: Input[list[Artifact]],
    transformer_evaluation: str,
    selection: Output[Artifact],
    champion: Output[Model],
    report: Output[HTML],
    summary: Output[Markdown],
    metrics: Output[Metrics],
    ensemble_evaluation: str = "",
) -> bool:
    """Pick the model to promote (if any) and copy it to ``champion``."""
    from components._runtime import stage, stage_config

    with stage("select", results_uri):
        import json
        import shutil
        from pathlib import Path

        from components._runtime import SOURCE_FILE, log_scalars, publish, read_json, seal_metrics
        from prompt_sentinel import storage
        from prompt_sentinel.data import read_split
        from prompt_sentinel.evaluation import evaluate_model, render_report, write_results_csv
        from prompt_sentinel.registry import CHAMPION, ModelRegistry
        from prompt_sentinel.selection import SELECTION_FILE, select_champion, write_selection

        cfg = stage_config(config_json, registry_root=registry_root, model_name=model_name)
        out = Path(selection.path)
        out.mkdir(parents=True, exist_ok=True)
        locations = [e.path for e in evaluations] + [u for u in (transformer_evaluation, ensemble_evaluation) if u]
        candidates, sources = [], {}
        for location in locations:
            evaluation = read_json(storage.join(location, "evaluation.json"))
            evaluation["evaluation_dir"] = location
            candidates.append(evaluation)
            sources[evaluation["model"]] = read_json(storage.join(location, SOURCE_FILE))["model_uri"]

        name = cfg.registry.model_name
        registry = ModelRegistry(cfg.registry.root, cfg)
        champion_version = registry.aliases(name).get(CHAMPION) if name in registry.list_models() else None
        champion_eval = None
        if champion_version is not None:
            champion_eval = evaluate_model(
                f"{name}/v{champion_version}",
                read_split(splits.path, "test"),
                cfg,
                out_dir=out / "_champion",
                robustness=False,
                efficiency=False,
                name=f"champion-v{champion_version}",
            )

        result = select_champion(candidates, cfg, champion_evaluation=champion_eval)
        write_selection(result, out / SELECTION_FILE)
        write_results_csv(candidates, out / "results.csv", result)
        shown = [*candidates, champion_eval] if champion_eval else candidates
        render_report(shown, result, out / "report.html")
        shutil.copyfile(out / "report.html", report.path)

        verdict = f"**promoted `{result.winner}`**" if result.promoted else "**no promotion**"
        lines = [f"# Selection: {verdict}", "", result.reason, ""]
        lines += ["| model | custom_score | status |", "|---|---:|---|"]
        for ev in candidates:
            score = ev.get("custom_score")
            shown_score = f"{score:.4f}" if isinstance(score, int | float) else "n/a"
            lines.append(f"| {ev['model']} | {shown_score} | {result.status_of(str(ev['model']))} |")
        Path(summary.path).write_text("\n".join(lines) + "\n")

        Path(champion.path).mkdir(parents=True, exist_ok=True)
        metrics.log_metric("promoted", float(result.promoted))
        metrics.log_metric("candidates", float(len(candidates)))
        metrics.log_metric("passed_gates", float(len(result.ranking)))
        if result.promoted:
            winner = next(ev for ev in candidates if ev["model"] == result.winner)
            (out / "winner_evaluation.json").write_text(json.dumps(winner, indent=2, default=str))
            source = storage.download_to_local(sources[result.winner])
            shutil.rmtree(champion.path)
            shutil.copytree(source, champion.path)
            champion.metadata.update({"model": result.winner, "model_type": winner.get("model_type")})
            log_scalars(metrics, {k: winner.get(k) for k in ("custom_score", "f1_macro", "recall_c2")}, "winner.")
        seal_metrics(metrics)
        selection.metadata.update({"promoted": result.promoted, "winner": result.winner or ""})

        index = {
            str(ev["model"]): {
                "model_uri": sources[ev["model"]],
                "evaluation_uri": ev["evaluation_dir"],
                "custom_score": ev.get("custom_score"),
                "status": result.status_of(str(ev["model"])),
            }
            for ev in candidates
        }
        (out / "candidates.json").write_text(json.dumps(index, indent=2))
        for fname in (SELECTION_FILE, "results.csv", "report.html", "candidates.json"):
            publish(results_uri, fname, (out / fname).read_bytes())
        return bool(result.promoted)
