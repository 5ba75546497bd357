import subprocess
import sys

import numpy as np
import pytest

import sparseae
from sparseae import CanonicalRun, ConfigError, DataError, Dataset, TrainConfig

SMALL = dict(arch="default", clusters=4, dim=60, per_cluster=10, epochs=6, batch_size=5, lr=3e-3)


def _params(run):
    return np.concatenate([run.model.encoder.params[0], run.model.decoder.params[0]])


def test_same_seed_gives_bit_identical_parameters():
    a = CanonicalRun(TrainConfig(seed=3, **SMALL))
    b = CanonicalRun(TrainConfig(seed=3, **SMALL))
    sa, sb = a.run(), b.run()
    np.testing.assert_array_equal(_params(a), _params(b))
    np.testing.assert_array_equal(a.model.encoder.m, b.model.encoder.m)
    assert a.history == b.history
    assert sa["test_l1"] == sb["test_l1"]
    c = CanonicalRun(TrainConfig(seed=4, **SMALL))
    c.run()
    assert not np.array_equal(_params(a), _params(c))


def test_training_reduces_loss_and_records_history():
    run = CanonicalRun(TrainConfig(seed=0, **{**SMALL, "epochs": 30, "lr": 1e-2, "lr_decay": False}))
    before = run.model.l1(run.data.test)
    summary = run.run()
    assert summary["test_l1"] < before - 0.1
    assert len(run.history["train_loss"]) == len(run.history["lr"]) == 30
    assert summary["epochs"] == 30 and summary["parameters"] == run.model.n_params
    assert summary["preserved"] == 1.0
    assert run.model.encoder.step[0] == 30 * 8  # 40 samples / batch 5 = 8 steps per epoch
    for key in ("test_l1", "train_l1", "parameters", "preserved", "epochs", "seconds", "us_per_step"):
        assert key in summary


def test_step_decay_of_learning_rate():
    c = TrainConfig(epochs=8, lr=1e-2)
    assert [c.lr_at(e) for e in range(8)] == pytest.approx([1e-2] * 2 + [1e-3] * 2 + [1e-4] * 2 + [1e-5] * 2)
    assert TrainConfig(epochs=3, lr=1.0).lr_step == 1
    assert TrainConfig(epochs=3, lr=1.0, lr_decay=False).lr_at(2) == 1.0
    run = CanonicalRun(TrainConfig(**{**SMALL, "epochs": 4}))
    run.run()
    assert run.history["lr"] == pytest.approx([3e-3, 3e-4, 3e-5, 3e-6])


def test_partial_last_batch():
    run = CanonicalRun(TrainConfig(**{**SMALL, "batch_size": 7, "epochs": 2}))
    run.run()
    assert run.model.encoder.step[0] == 2 * 6  # ceil(40 / 7)


def test_user_data_width_follows_preset_and_must_match_explicit_arch():
    rng = np.random.default_rng(0)
    data = Dataset(*(rng.random((12, 17)) for _ in range(3)))
    run = CanonicalRun(TrainConfig(epochs=1, batch_size=4), data)
    assert run.arch.sizes == (17, 12, 9)  # widths cut to 3/4 of the layer before
    with pytest.raises(DataError, match="does not match"):
        CanonicalRun(TrainConfig(arch="16,4", epochs=1), data)


@pytest.mark.parametrize("field, value, match", [
    ("epochs", 0, "epochs: must be >= 1"),
    ("batch_size", 0, "batch_size"),
    ("lr", 0.0, "lr: must be in"),
    ("lr", float("nan"), "lr"),
    ("noise", 1.5, "noise"),
    ("profile", "x", "profile"),
    ("epochs", 2.5, "integer"),
])
def test_config_validation_names_the_field(field, value, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**{field: value}).validate()


def test_batch_larger_than_training_split():
    with pytest.raises(ConfigError, match=r"batch_size: must be in \[1, 40\]"):
        CanonicalRun(TrainConfig(**{**SMALL, "batch_size": 41}))


def test_config_round_trip_and_unknown_fields():
    c = TrainConfig(epochs=3, seed=9).validate()
    assert TrainConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="unknown field"):
        TrainConfig.from_dict({"epoch": 3})


def test_train_function_returns_model_summary_history():
    model, summary, run = sparseae.train(paradigm="canonical", seed=1, **{**SMALL, "epochs": 2})
    assert isinstance(model, sparseae.Autoencoder) and model is run.model
    assert summary["epochs"] == 2 and len(run.history["train_loss"]) == 2
    assert summary["test_l1"] == model.l1(run.data.test)
    model, summary, run = sparseae.train(paradigm="lipi", population=3, seed=1,
                                         **{**SMALL, "epochs": 2})
    assert isinstance(run, sparseae.LipiRun)
    assert summary["test_l1"] == model.l1(run.data.test) == min(summary["centres_test_l1"])


def test_import_does_not_load_click_or_cuda():
    code = ("import sys, sparseae; "
            "print('click' in sys.modules, 'numba.cuda' in sys.modules, 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]
