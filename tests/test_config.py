import pytest

from rnnlab.config import DataConfig, ModelConfig, RunConfig, SampleConfig, TrainConfig, from_dict
from rnnlab.errors import ConfigError


def test_from_dict_round_trips_the_defaults():
    cfg = RunConfig(data=DataConfig(data="x.txt"), train=TrainConfig(max_steps=3))
    assert from_dict(RunConfig, cfg.to_dict()) == cfg


def test_unknown_keys_and_wrong_types_are_all_reported_at_once():
    d = RunConfig().to_dict()
    d["model"]["hiden_size"] = 3
    d["model"]["num_layers"] = "two"
    d["optim"]["lr"] = True
    d["colour"] = "red"
    with pytest.raises(ConfigError) as e:
        from_dict(RunConfig, d)
    msg = str(e.value)
    assert "hiden_size" in msg and "num_layers" in msg and "lr" in msg and "colour" in msg
    assert len(e.value.problems) == 4


def test_ints_are_accepted_for_floats_but_not_the_reverse():
    assert from_dict(TrainConfig, {"time_budget": 5}).time_budget == 5.0
    with pytest.raises(ConfigError):
        from_dict(TrainConfig, {"batch_size": 2.5})


def test_literal_fields_reject_other_values():
    with pytest.raises(ConfigError, match="cell"):
        from_dict(ModelConfig, {"cell": "transformer"})


def test_validate_lists_every_nonsensical_hyperparameter():
    cfg = RunConfig(
        data=DataConfig(data="x"),
        model=ModelConfig(hidden_size=0, dropout=1.5),
        train=TrainConfig(batch_size=0, max_steps=10),
    )
    cfg.optim.lr = -1.0
    with pytest.raises(ConfigError) as e:
        cfg.validate()
    text = str(e.value)
    for word in ("hidden_size", "dropout", "batch_size", "lr"):
        assert word in text


def test_a_run_needs_a_corpus_and_a_stop_condition():
    with pytest.raises(ConfigError) as e:
        RunConfig().validate()
    assert "no corpus" in str(e.value) and "no stop condition" in str(e.value)


@pytest.mark.parametrize("kw", [{"temperature": 0}, {"top_p": 0.0}, {"top_k": -1}, {"length": -1},
                                {"beam_width": 0}, {"strategy": "nucleus"}])
def test_sample_config_rejects_nonsense(kw):
    with pytest.raises(ConfigError):
        SampleConfig(**kw).validate()


def test_configs_built_in_python_with_wrong_types_are_refused_in_one_error():
    for kw, says in ((dict(length=10.5), "length: expected an integer, got 10.5"),
                     (dict(top_k=2.5), "top_k: expected an integer"),
                     (dict(num_samples=True), "num_samples: expected an integer"),
                     (dict(temperature="hot"), "temperature: expected a number")):
        with pytest.raises(ConfigError, match=says):
            SampleConfig(**kw).validate()
    assert SampleConfig(temperature=1).validate().temperature == 1  # an int where a float is expected is a number
    cfg = RunConfig()
    cfg.data.data, cfg.train.max_steps, cfg.model.hidden_size = "x.txt", "10", 0
    with pytest.raises(ConfigError) as e:
        cfg.validate()
    assert e.value.problems == ["hidden_size must be >= 1, got 0", "max_steps: expected an integer, got '10'"]


def test_type_hints_are_computed_once_per_class_and_are_typings():
    import typing

    from rnnlab.config import type_hints, type_problems

    assert type_hints(RunConfig) == typing.get_type_hints(RunConfig)
    assert type_hints(RunConfig) is type_hints(RunConfig)  # cached: evaluated once, not on every check
    assert type_problems(RunConfig(model=ModelConfig(hidden_size="8"))) == [  # type: ignore[arg-type]
        "hidden_size: expected an integer, got '8'"]


def test_a_saved_classifier_config_without_pool_reads_as_the_last_state_alone():
    """Run folders saved before the classifier could pool its states hold no ``pool``: their heads read the last
    state alone, so that is what a config without the field means; a new run's three members pool differently."""
    from rnnlab.config import ClassifyRunConfig

    saved = ClassifyRunConfig().to_dict()
    assert saved["classifier"]["pool"] == "last,mean,last+mean"
    del saved["classifier"]["pool"]
    assert from_dict(ClassifyRunConfig, saved).classifier.pool == "last"
    saved["classifier"]["pool"] = "last,max"
    with pytest.raises(ConfigError, match="pool must be"):
        from_dict(ClassifyRunConfig, saved).validate()
