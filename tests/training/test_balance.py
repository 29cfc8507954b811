"""balance_features: SMOTE & co. on dense features, class-weight fallback on sparse TF-IDF."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from prompt_sentinel.config import load_config
from prompt_sentinel.errors import ConfigError, TrainingError
from prompt_sentinel.training.balance import balance_features, balance_mode, balanced_sample_weight, build_sampler


def _data(counts=(40, 12, 20), dim=6, seed=0, spacing=3.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(loc=spacing * c, size=(n, dim)) for c, n in enumerate(counts)])
    y = np.repeat(np.arange(len(counts)), counts)
    return X, y


def _cfg(*overrides: str):
    return load_config(None, list(overrides))


def _balance(X, y, cfg):
    return balance_features(X, y, cfg.balance, cfg.labels, cfg.seed)


def test_smote_balances_dense_features_and_keeps_original_rows_first():
    X, y = _data()
    X_res, y_res, report = _balance(X, y, _cfg("balance.method=smote"))
    assert report.applied == "resample"
    assert report.sampler == "SMOTE"
    assert report.counts_before == {"benign": 40, "suspicious": 12, "malicious": 20}
    assert report.counts_after == {"benign": 40, "suspicious": 40, "malicious": 40}
    assert report.synthetic_rows == 48 == len(y_res) - len(y)
    # original rows are untouched and come first; synthetic ones are appended
    assert np.array_equal(X_res[: len(y)], X)
    assert np.array_equal(y_res[: len(y)], y)
    # SMOTE interpolates within a class: synthetic suspicious rows lie near the suspicious cluster
    synthetic = X_res[len(y) :][y_res[len(y) :] == 1]
    assert np.abs(synthetic.mean(axis=0) - 3).max() < 1.0


@pytest.mark.parametrize("method", ["borderline_smote", "adasyn", "random_oversample"])
def test_other_samplers_oversample_minorities(method):
    # overlapping classes: BorderlineSMOTE only synthesizes near the class border
    X, y = _data(seed=1, spacing=0.5)
    X_res, y_res, report = _balance(X, y, _cfg(f"balance.method={method}"))
    assert report.applied == "resample"
    after = np.bincount(y_res)
    assert after[0] == 40
    assert np.all(after[1:] > np.bincount(y)[1:])
    assert np.array_equal(X_res[: len(y)], X)


def test_sparse_tfidf_falls_back_to_class_weights_for_interpolating_methods():
    X, y = _data()
    X_sparse = sp.csr_matrix(np.abs(X))
    X_res, y_res, report = _balance(X_sparse, y, _cfg("balance.method=smote"))
    assert report.applied == "class_weight"
    assert X_res is X_sparse
    assert np.array_equal(y_res, y)
    assert report.counts_after == report.counts_before
    assert "class weights" in report.note
    # random oversampling only duplicates rows, so it works on sparse matrices as configured
    X_dup, y_dup, dup_report = _balance(X_sparse, y, _cfg("balance.method=random_oversample"))
    assert dup_report.applied == "resample"
    assert sp.issparse(X_dup)
    assert np.bincount(y_dup).tolist() == [40, 40, 40]


def test_none_leaves_data_alone():
    X, y = _data()
    X_res, _, report = _balance(X, y, _cfg("balance.method=none"))
    assert X_res is X
    assert report.applied == "none"
    assert balance_mode("none", sparse=False) == "none"


def test_sampling_strategy_by_label_name():
    X, y = _data()
    cfg = _cfg("balance.method=smote", "balance.sampling_strategy={suspicious: 30}")
    _, y_res, report = _balance(X, y, cfg)
    assert np.bincount(y_res).tolist() == [40, 30, 20]
    assert report.counts_after["suspicious"] == 30


def test_invalid_sampling_strategies_are_config_errors():
    X, y = _data()
    with pytest.raises(ConfigError, match=r"unknown label\(s\) \['evil'\]"):
        _balance(X, y, _cfg("balance.sampling_strategy={evil: 50}"))
    with pytest.raises(ConfigError, match="ratio only works with 2 classes"):
        _balance(X, y, _cfg("balance.sampling_strategy=0.5"))
    with pytest.raises(ConfigError, match="allowed"):
        _balance(X, y, _cfg("balance.sampling_strategy=everything"))


def test_neighbours_are_capped_for_tiny_classes():
    X, y = _data(counts=(30, 3, 10))
    cfg = _cfg("balance.method=smote", "balance.k_neighbors=5")
    assert build_sampler(cfg.balance, cfg.labels, cfg.seed, y).k_neighbors == 2
    _, y_res, _ = _balance(X, y, cfg)
    assert np.bincount(y_res).tolist() == [30, 30, 30]
    X1, y1 = _data(counts=(30, 1, 10))
    with pytest.raises(TrainingError, match="only 1 training row"):
        _balance(X1, y1, cfg)


def test_balanced_sample_weight_matches_class_weight_formula():
    y = np.array([0] * 6 + [1] * 2 + [2] * 4)
    w = balanced_sample_weight(y)
    expected = {0: 12 / (3 * 6), 1: 12 / (3 * 2), 2: 12 / (3 * 4)}
    assert np.allclose(w, [expected[c] for c in y])
    # every class carries the same total weight
    assert np.allclose([w[y == c].sum() for c in range(3)], 4.0)
