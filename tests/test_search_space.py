"""Search spaces: the shipped files load and sample valid configs; malformed files fail by name."""

from __future__ import annotations

import pickle
from pathlib import Path

import optuna
import pytest
import yaml

from pokegan_ray.search import SearchSpace, define_by_run, trial_config
from pokegan_ray.training.config import ExperimentConfig

SPACES = Path(__file__).resolve().parent.parent / "search_spaces"
SHIPPED = ["quick", "default", "wide"]
WASSERSTEIN = {"wgan", "wgan-gp"}

optuna.logging.set_verbosity(optuna.logging.WARNING)


def sample_trials(space, facts, sampler, count=30):
    """(trial.params, returned values, validated config) for `count` asked trials."""
    study = optuna.create_study(sampler=sampler)
    function = define_by_run(space, facts)
    results = []
    for index in range(count):
        trial = study.ask()
        sampled = function(trial)
        raw = trial_config(space, sampled)
        if raw.get("model", {}).get("conditional"):
            raw["model"]["num_classes"] = 18  # the runner takes this from the data
        results.append((dict(trial.params), sampled, ExperimentConfig.from_dict(raw), raw))
        # TPE only leaves its random start-up once trials are told.
        study.tell(trial, float(index % 7))
    return results


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("sampler", [optuna.samplers.RandomSampler, optuna.samplers.TPESampler])
@pytest.mark.parametrize("labelled", [False, True])
def test_shipped_spaces_sample_valid_configs(name, sampler, labelled):
    space = SearchSpace.load(str(SPACES / f"{name}.yaml"))
    assert space.description
    for params, sampled, config, raw in sample_trials(space, {"data.labelled": labelled}, sampler(seed=0)):
        assert set(params) == set(sampled)
        loss = raw["loss"].get("name", "dcgan")
        if "loss.n_critic" in space.dimension_names:
            wasserstein = loss in WASSERSTEIN
            assert ("loss.n_critic" in params) == wasserstein
            assert ("n_critic" in raw["loss"]) == wasserstein
        if not labelled:
            assert "model.conditional" not in params and config.gan.model.conditional is False
        if loss == "wgan":
            assert "loss.adam_betas" not in params and config.gan.loss.adam_betas is None


def test_labelled_data_samples_both_acgan_and_plain():
    space = SearchSpace.load(str(SPACES / "default.yaml"))
    results = sample_trials(space, {"data.labelled": True}, optuna.samplers.RandomSampler(seed=1))
    assert {config.gan.model.conditional for *_, config, _raw in results} == {False, True}


def test_list_values_reach_the_config_as_lists():
    space = SearchSpace.load(str(SPACES / "default.yaml"))
    for params, sampled, config, raw in sample_trials(space, {"data.labelled": False},
                                                      optuna.samplers.RandomSampler(seed=2)):
        if "loss.adam_betas" in params:
            assert isinstance(params["loss.adam_betas"], str)  # Optuna only takes scalars
            assert raw["loss"]["adam_betas"] == list(config.gan.loss.adam_betas)


def test_sampler_pickles_and_trial_config_nests_sections(tmp_path):
    space = SearchSpace.load(str(SPACES / "quick.yaml"))
    function = pickle.loads(pickle.dumps(define_by_run(space, {})))
    sampled = function(optuna.create_study().ask())
    raw = trial_config(space, sampled)
    assert raw["loss"]["generator_learning_rate"] == sampled["loss.generator_learning_rate"]
    assert raw["train"]["images"] == space.base["train"]["images"] == 9600  # from base
    assert "loss.name" not in raw


def test_missing_fact_is_an_error():
    space = SearchSpace.load(str(SPACES / "default.yaml"))
    with pytest.raises(ValueError, match="data.labelled"):
        define_by_run(space, {})


LR = {"type": "float", "low": 1.0e-5, "high": 1.0e-3, "log": True}
NAME = {"type": "categorical", "values": ["dcgan", "wgan", "wgan-gp"]}


@pytest.mark.parametrize("document, message", [
    ({"dimensions": {"loss.learning_rate": LR}}, r"'loss.learning_rate'.*not a config key"),
    ({"dimensions": {"losses.name": NAME}}, r"'losses.name'.*not a config key"),
    ({"dimension": {"loss.name": NAME}}, r"unknown top-level key.*'dimension'"),
    ({"dimensions": {}}, r"non-empty"),
    ({"dimensions": {"loss.generator_learning_rate": {**LR, "low": 1.0e-2}}}, r"'loss.generator_learning_rate'.*low must be below high"),
    ({"dimensions": {"loss.ema_decay": {"type": "float", "low": 0.0, "high": 0.9, "log": True}}}, r"'loss.ema_decay'.*log scale needs low > 0"),
    ({"dimensions": {"loss.generator_learning_rate": {**LR, "low": "1e-5"}}}, r"'loss.generator_learning_rate'.*1.0e-5"),
    ({"dimensions": {"loss.name": {"type": "categorical", "values": []}}}, r"'loss.name'.*non-empty list"),
    ({"dimensions": {"loss.name": {"type": "categorical", "values": ["dcgan", "dcgan"]}}}, r"'loss.name'.*twice"),
    ({"dimensions": {"loss.name": {"type": "choice", "values": ["dcgan"]}}}, r"'loss.name'.*type must be"),
    ({"dimensions": {"loss.name": {**NAME, "low": 1}}}, r"'loss.name'.*unknown key.*'low'"),
    ({"dimensions": {"loss.n_critic": {"type": "int", "low": 1, "high": 5, "log": True, "step": 2}}}, r"'loss.n_critic'.*step cannot be combined"),
    ({"dimensions": {"train.batch_size": {"type": "int", "low": 8.5, "high": 64}}}, r"'train.batch_size'.*integer"),
    ({"dimensions": {"loss.n_critic": {"type": "int", "low": 1, "high": 5, "when": {"loss.name": ["wgan"]}},
                     "loss.name": NAME}}, r"'loss.n_critic'.*'loss.name'.*comes later"),
    ({"dimensions": {"loss.n_critic": {"type": "int", "low": 1, "high": 5, "when": {"loss.nmae": ["wgan"]}}}},
     r"'loss.n_critic'.*'loss.nmae'.*neither an earlier dimension nor a fact"),
    ({"dimensions": {"loss.name": NAME, "loss.n_critic": {"type": "int", "low": 1, "high": 5,
                                                          "when": {"loss.name": ["wgan-pg"]}}}}, r"'loss.n_critic'.*'wgan-pg' is not one of"),
    ({"dimensions": {"model.conditional": {"type": "categorical", "values": [False, True],
                                           "when": {"data.labelled": ["yes"]}}}}, r"'model.conditional'.*fact is bool"),
    # Values the config itself rejects fail at load, naming the dimension.
    ({"dimensions": {"model.upsampler": {"type": "categorical", "values": ["transposed", "pixelshuffle"]}}},
     r"'model.upsampler'.*model.upsampler='pixelshuffle' is not allowed"),
    ({"dimensions": {"loss.name": NAME, "loss.clip_value": {"type": "float", "low": 0.01, "high": 0.1}}},
     r"'loss.clip_value'.*clip_value does not apply to loss.name='dcgan'"),
    ({"dimensions": {"loss.name": NAME, "loss.adam_betas": {"type": "categorical", "values": [[0.5, 0.999]],
                                                            "when": {"loss.name": ["dcgan", "wgan"]}}}},
     r"'loss.adam_betas'.*adam_betas does not apply to loss.name='wgan'"),
    # A typo in base fails early, naming the dimension that was probed with it.
    ({"base": {"train": {"stpes": 10}}, "dimensions": {"loss.name": NAME}}, r"'loss.name'.*'stpes'"),
    ({"base": {"loss": {"name": "wgan"}}, "dimensions": {"loss.name": NAME}}, r"'loss.name'.*also fixed in base"),
    ({"base": {"train": {"batch_size": 64}, "scale": {"workers": 3}}, "dimensions": {"loss.name": NAME}},
     r"'loss.name'.*divide evenly"),
    ({"dimensions": {"loss.name": NAME}, "search": {"signal": "is"}}, r"search.signal='is' is not allowed.*'kid'"),
    # PBT may change only what a running trial can take, in every trial.
    ({"dimensions": {"loss.name": {**NAME, "mutable": True}}}, r"'loss.name'.*cannot be mutable"),
    ({"dimensions": {"loss.name": NAME, "loss.generator_learning_rate": {**LR, "mutable": True,
                                                                        "when": {"loss.name": ["dcgan"]}}}},
     r"'loss.generator_learning_rate'.*mutable dimension cannot have `when`"),
    ({"dimensions": {"loss.name": NAME}, "search": {"scheduler": "pbt"}}, r"no dimension is marked `mutable: true`"),
])
def test_malformed_space_names_the_problem(tmp_path, document, message):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")  # order matters
    with pytest.raises(ValueError, match=message) as error:
        SearchSpace.load(str(path))
    assert str(path) in str(error.value)


def test_malformed_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("dimensions: {loss.name: [dcgan\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{path} is not valid YAML"):
        SearchSpace.load(str(path))
