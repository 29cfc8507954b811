"""One module per pipeline stage; the CLI, the KFP components and the local run all call the same functions.

``prepare`` (validate + split) → ``balance`` (reviewable balancing record) → ``train`` (one model, any family) →
``ensemble`` (soft voting over the trained candidates) → ``evaluate`` → ``select`` (gates, champion vs
challenger) → ``push`` (registry + MLflow) → ``deploy`` (GitOps change or apply); ``records`` keeps what a run
leaves for people: published results, per-stage failures, the run status.
"""
