import pytest

from violet.config import RunConfig, apply_overrides, config_from_dict, parse_dotted
from violet.runtime import build_config
from violet.tasks import get_task


def test_dotted_overrides_are_typed_and_nested():
    config = RunConfig()
    apply_overrides(config, parse_dotted(["train.lr=1e-4", "model.width=256", "data.train_augment=false",
                                          "eval.rerank_k=all"]))
    assert config.train.lr == pytest.approx(1e-4)
    assert config.model.width == 256 and isinstance(config.model.width, int)
    assert config.data.train_augment is False
    assert config.eval.rerank_k == -1


def test_unknown_key_names_the_key_and_known_ones():
    with pytest.raises(KeyError, match=r"train.lrr.*known keys here.*lr"):
        apply_overrides(RunConfig(), parse_dotted(["train.lrr=1"]))


def test_bad_type_names_the_key():
    with pytest.raises(ValueError, match="train.batch_size: expected int"):
        apply_overrides(RunConfig(), parse_dotted(["train.batch_size=abc"]))
    with pytest.raises(ValueError, match="model.width"):
        apply_overrides(RunConfig(), parse_dotted(["model.width=1.5"]))


def test_validation_runs_after_override():
    with pytest.raises(ValueError, match="divisible"):
        apply_overrides(RunConfig(), parse_dotted(["model.heads=3"]))
    with pytest.raises(ValueError, match="mixed_precision"):
        apply_overrides(RunConfig(), parse_dotted(["train.mixed_precision=fp8"]))


@pytest.mark.parametrize("override, key", [
    ("train.lr=0", "train.lr"), ("train.lr=-1e-3", "train.lr"), ("train.max_steps=-1", "train.max_steps"),
    ("train.epochs=0", "train.epochs"), ("train.warmup_ratio=1.5", "train.warmup_ratio"),
    ("data.num_frames=0", "data.num_frames"), ("train.lr_schedule=cosinus", "train.lr_schedule"),
    ("model.text_pool=max", "model.text_pool"),
])
def test_impossible_values_are_refused_naming_the_key(override, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        apply_overrides(RunConfig(), parse_dotted([override]))


def test_precedence_task_defaults_preset_yaml_flags_dotted(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("train:\n  lr: 0.002\n  epochs: 7\nmodel:\n  width: 64\n")
    task = get_task("qa-mc")  # its defaults set batch_size 16 and epochs 20
    config = build_config(task, model="tiny", config_file=str(yaml_file),
                          flags={"train": {"max_steps": 5, "batch_size": None}}, dotted=["train.lr=0.003"])
    assert config.train.batch_size == 16  # task default survives (flag not given)
    assert config.train.epochs == 7  # YAML beats the task default
    assert config.train.lr == pytest.approx(0.003)  # dotted beats YAML
    assert config.train.max_steps == 5
    assert config.model.width == 64


def test_round_trip_through_dict():
    config = RunConfig()
    apply_overrides(config, parse_dotted(["model.width=64", "objective.mlm_prob=0.2"]))
    again = config_from_dict(config.to_dict())
    assert again == config


def test_dotted_values_are_converted_by_the_field_type():
    config = RunConfig()
    # YAML would read `no` as False; the dotted value stays text until the field's type converts it.
    apply_overrides(config, parse_dotted(["train.mixed_precision=no", "train.max_steps=1e3", "model.tokenizer='a b'",
                                          "model.grad_checkpointing=on"]))
    assert config.train.mixed_precision == "no" and config.train.max_steps == 1000
    assert config.model.tokenizer == "a b" and config.model.grad_checkpointing is True


def test_yaml_boolean_for_a_text_field_is_a_clear_error():
    with pytest.raises(ValueError, match="train.mixed_precision: YAML read False as a boolean"):
        apply_overrides(RunConfig(), {"train": {"mixed_precision": False}})


def test_init_keeps_the_checkpoint_architecture_and_the_users_model_overrides(tmp_path):
    import train
    from violet.config import save_config

    saved = RunConfig()
    apply_overrides(saved, {"model": {"width": 64, "embed_dim": 32}})
    run = tmp_path / "run"
    run.mkdir()
    save_config(saved, run / "config.json")
    config = build_config(get_task("retrieval"), dotted=["model.grad_checkpointing=true"], init=str(run))
    assert config.model.width == 64 and config.model.grad_checkpointing is True  # was silently dropped before
    with pytest.raises(SystemExit, match="--model base conflicts with --init"):
        train.main(["--task", "retrieval", "--data", str(tmp_path), "--output-dir", str(tmp_path / "o"),
                    "--init", str(run), "--model", "base"])
