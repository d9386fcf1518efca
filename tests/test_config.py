import json
import re
from pathlib import Path

import pytest
import yaml

from violet.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    config_from_dict,
    load_yaml,
    parse_dotted,
    save_config,
)
from violet.models import PRESETS
from violet.runtime import build_config
from violet.tasks import TASKS, get_task


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
    ("model.text_pool=max", "model.text_pool"), ("model.video_pool=max", "model.video_pool"),
    ("model.temperature=0.001", "model.temperature"), ("model.temperature=2", "model.temperature"),
])
def test_impossible_values_are_refused_naming_the_key(override, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        apply_overrides(RunConfig(), parse_dotted([override]))


def test_attention_pooling_refuses_segments_it_would_ignore():
    with pytest.raises(ValueError, match="video_pool=attention.*video_pool_segments=1"):
        apply_overrides(RunConfig(), parse_dotted(["model.video_pool=attention", "model.video_pool_segments=2"]))


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


def test_tiny_preset_gives_tasks_their_own_settings_unless_the_architecture_comes_from_a_checkpoint(tmp_path):
    for task in ("retrieval", "qa-oe", "pretrain", "qa-mc"):
        model = build_config(get_task(task)).model
        assert (model.patch_size, model.tubelet) == (4, 4), task
    qa_mc = build_config(get_task("qa-mc"))  # options scored by the dual encoder, MLM on the answer, 24 epochs
    assert (qa_mc.objective.vtm_weight, qa_mc.objective.mlm_weight, qa_mc.train.epochs) == (0.0, 1.0, 24)
    # ... and the answer text against its clip played backwards, on 4 rows of each batch (the step budget)
    objective = qa_mc.objective
    assert (objective.temporal_weight, objective.temporal_negative, objective.temporal_rows) == (1.0, "reverse", 4)
    paper = build_config(get_task("qa-mc"), model="small").objective  # the task's own recipe
    assert (paper.vtm_weight, paper.mlm_weight, paper.temporal_weight) == (1.0, 0.0, 0.0)
    # retrieval: the reversed clip tied on val for ~30 % more time; off
    assert build_config(get_task("retrieval")).objective.temporal_weight == 0.0
    # Tiny pretraining also drops the VTM pairs and MVM and runs 32 epochs (the task's own default: 35, all losses) ...
    tiny = build_config(get_task("pretrain"))
    assert (tiny.objective.vtm_weight, tiny.objective.mvm_weight, tiny.train.epochs) == (0.0, 0.0, 32)
    # ... while the paper-size presets keep the task's recipe.
    base = build_config(get_task("pretrain"), model="base")
    assert (base.objective.vtm_weight, base.objective.mvm_weight, base.train.epochs) == (1.0, 1.0, 35)
    assert build_config(get_task("retrieval"), dotted=["model.patch_size=8"]).model.patch_size == 8  # user wins
    assert build_config(get_task("pretrain"), dotted=["objective.vtm_weight=1"]).objective.vtm_weight == 1.0
    saved = RunConfig()  # a run trained with 8-pixel patches (e.g. pretraining) keeps them when fine-tuned
    run = tmp_path / "run"
    run.mkdir()
    save_config(saved, run / "config.json")
    from_run = build_config(get_task("retrieval"), init=str(run)).model
    assert (from_run.patch_size, from_run.tubelet) == (8, 2)
    # Pretraining continued from a checkpoint keeps its architecture but still gets the preset's other settings.
    continued = build_config(get_task("pretrain"), init=str(run))
    assert (continued.model.patch_size, continued.objective.vtm_weight, continued.train.epochs) == (8, 0.0, 32)


def test_fine_tuning_defaults_apply_only_with_init_and_yield_to_the_user(tmp_path):
    saved = RunConfig()
    run = tmp_path / "run"
    run.mkdir()
    save_config(saved, run / "config.json")

    class FineTuned(get_task("retrieval")):
        defaults = {"train": {"lr": 5e-4, "epochs": 50}}
        init_defaults = {"train": {"lr": 1e-4}}

    assert build_config(FineTuned).train.lr == 5e-4  # from scratch
    from_run = build_config(FineTuned, init=str(run))
    assert from_run.train.lr == 1e-4 and from_run.train.epochs == 40  # what init_defaults leave is the preset's
    assert build_config(FineTuned, init=str(run), dotted=["train.lr=3e-4"]).train.lr == 3e-4
    # The tiny preset's retrieval recipe (VTC + MLM over half of each batch, 40 epochs) is for training from
    # scratch; a fine-tune's own defaults (the recipe chosen on val) win over it.
    scratch = build_config(get_task("retrieval"))
    assert (scratch.train.lr, scratch.train.epochs, scratch.objective.mlm_weight) == (5e-4, 40, 1.0)
    assert scratch.objective.mlm_rows == 16
    fine_tune = build_config(get_task("retrieval"), init=str(run))
    assert (fine_tune.train.lr, fine_tune.train.epochs, fine_tune.objective.mlm_weight) == (1e-4, 20, 0.0)


# ----- errors: ConfigError naming the key and what is allowed -----

def test_unknown_key_is_a_config_error_with_the_closest_key_and_a_readable_message():
    with pytest.raises(ConfigError) as error:
        apply_overrides(RunConfig(), parse_dotted(["model.widht=64"]))
    assert isinstance(error.value, KeyError)  # callers that caught KeyError still do
    message = str(error.value)
    assert message.startswith("unknown config key 'model.widht' (did you mean 'model.width'?)")  # no KeyError quotes
    assert "known keys here:" in message and "video_encoder" in message
    with pytest.raises(ConfigError, match=r"unknown config key 'optimizer'; known keys here: data, eval, init"):
        apply_overrides(RunConfig(), parse_dotted(["optimizer.lr=1"]))  # nothing close: no suggestion


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=abc", "train.batch_size: expected int, got 'abc'"),
    ("data.streaming=maybe", r"data.streaming: expected a boolean \(1\|true\|yes"),
    ("model.video_encoder=cnn", r"model.video_encoder must be vit\|swin, got 'cnn'"),
    ("objective.mvm_target=depth", r"objective.mvm_target must be pixel\|hog\|vq, got 'depth'"),
    ("objective.vtm_negatives=all", r"objective.vtm_negatives must be global\|local"),
    ("objective.mvm_ratio=1.5", r"objective.mvm_ratio must be in \[0, 1\)"),
    ("model.heads=0", "model.heads must be >= 1, got 0"),  # not a ZeroDivisionError from width % heads
    ("model.patch_size=0", "model.patch_size must be >= 1"),
    ("train.grad_accum=0", "train.grad_accum must be >= 1, got 0"),
    ("eval.rerank_k=-2", "eval.rerank_k must be >= -1"),
    ("train", "must look like section.key=value"),
    ("train.=3", "must look like section.key=value"),
    ("train=3", "train is a section; set its fields"),
])
def test_bad_values_raise_config_errors_that_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(RunConfig(), parse_dotted([override]))


def test_swin_lists_that_are_not_numbers_name_the_key():
    with pytest.raises(ConfigError, match="model.swin_depths must be comma-separated whole numbers, got '2,x'"):
        apply_overrides(RunConfig(), parse_dotted(["model.video_encoder=swin", "model.swin_depths=2,x"]))


def test_yaml_problems_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file .*missing.yaml does not exist"):
        load_yaml(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- train\n")
    with pytest.raises(ConfigError, match="must be a mapping of sections"):
        load_yaml(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("train: [1\n")
    with pytest.raises(ConfigError, match="broken.yaml is not valid YAML"):
        load_yaml(tmp_path / "broken.yaml")
    # An empty value is YAML's null: it must not become the text "None".
    with pytest.raises(ConfigError, match="model.tokenizer: no value given"):
        apply_overrides(RunConfig(), {"model": {"tokenizer": None}})
    with pytest.raises(ConfigError, match="model.width: expected int, got a list"):
        apply_overrides(RunConfig(), {"model": {"width": [64]}})


# ----- the example files in configs/ -----

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _config_files() -> list[Path]:
    return sorted(CONFIGS.rglob("*.yaml"))


def _leaves(tree: dict, prefix: str = "") -> dict[str, object]:
    found = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            found.update(_leaves(value, f"{prefix}{key}."))
        else:
            found[prefix + key] = value
    return found


def _task_and_model(path: Path) -> tuple[str, str | None]:
    """configs/<task>.yaml goes with that task; configs/presets/<preset>.yaml with that preset, for pretraining."""
    if path.parent.name == "presets":
        assert path.stem in PRESETS, f"{path}: presets/ files are named after a preset ({', '.join(PRESETS)})"
        return "pretrain", path.stem
    assert path.stem in TASKS, f"{path}: files in configs/ are named after a task ({', '.join(TASKS)})"
    return path.stem, None


def test_there_is_an_example_file_per_task_and_some_presets():
    names = {path.stem for path in _config_files()}
    assert set(TASKS) <= names and len(names - set(TASKS)) >= 1


@pytest.mark.parametrize("path", _config_files(), ids=lambda path: str(path.relative_to(CONFIGS)))
def test_every_example_config_resolves_and_its_values_land(path):
    task, model = _task_and_model(path)
    without = build_config(get_task(task), model=model).to_dict()
    config = build_config(get_task(task), model=model, config_file=str(path)).to_dict()
    leaves = _leaves(load_yaml(path))
    assert leaves, f"{path} sets nothing"
    changed = 0
    for dotted, value in leaves.items():
        section, key = dotted.split(".")
        landed = config[section][key]
        assert landed == (pytest.approx(float(value)) if isinstance(landed, float) else value), dotted
        changed += landed != without[section][key]
    assert changed, f"{path}: every value equals what the task and preset already set"


# ----- python -m violet.config -----

def _run_cli(capsys, *argv: str) -> str:
    from violet.config.__main__ import main

    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_cli_prints_the_resolved_config_with_overrides_before_and_after_flags(capsys):
    out = _run_cli(capsys, "train.lr=0.001", "--task", "qa-mc", "--model", "simvtp-tiny", "--max-steps", "7",
                   "model.dropout=0.1")
    resolved = json.loads(out)
    assert resolved["task"] == "qa-mc" and resolved["model"]["preset"] == "simvtp-tiny"
    assert resolved["train"]["lr"] == pytest.approx(0.001) and resolved["model"]["dropout"] == pytest.approx(0.1)
    assert resolved["train"]["max_steps"] == 7 and resolved["train"]["batch_size"] == 16  # flag; task default
    assert resolved["data"]["num_frames"] == 4  # the preset's downstream frames
    again = yaml.safe_load(_run_cli(capsys, "--task", "qa-mc", "--model", "simvtp-tiny", "--format", "yaml",
                                    "--max-steps", "7", "train.lr=0.001", "model.dropout=0.1"))
    assert again == resolved


def test_cli_reads_yaml_files_and_the_init_runs_architecture(capsys, tmp_path):
    saved = RunConfig()
    apply_overrides(saved, {"model": {"width": 64, "embed_dim": 32}})
    run = tmp_path / "run"
    run.mkdir()
    save_config(saved, run / "config.json")
    resolved = json.loads(_run_cli(capsys, "--task", "retrieval", "--init", str(run),
                                   "--config", str(CONFIGS / "retrieval.yaml")))
    assert resolved["model"]["width"] == 64 and resolved["init"] == str(run)
    assert resolved["train"]["eval_every"] == 500  # from the YAML


@pytest.mark.parametrize("argv, message", [
    (["--task", "pretrain", "train.lrr=1"], "config error: unknown config key 'train.lrr' (did you mean 'train.lr'?)"),
    (["--task", "pretrain", "--config", "nope.yaml"], "config error: config file nope.yaml does not exist"),
    (["--task", "retrieval", "--init", "not_a_run"], "config error: not_a_run is not a violet run"),
])
def test_cli_errors_are_one_line_without_a_traceback(argv, message):
    from violet.config.__main__ import main

    with pytest.raises(SystemExit) as error:
        main(argv)
    assert str(error.value.code).startswith(message)  # SystemExit(str): printed as is, exit status 1


def test_cli_refuses_abbreviated_flags_and_a_missing_task(capsys):
    from violet.config.__main__ import main

    for argv in (["--task", "pretrain", "--out", "x"], ["train.lr=1"]):
        with pytest.raises(SystemExit) as error:
            main(argv)
        assert error.value.code == 2
    assert "--task is required" in capsys.readouterr().err


def test_list_keys_has_every_key_with_its_default_and_comment(capsys):
    rows = json.loads(_run_cli(capsys, "--list-keys", "--format", "json"))
    by_name = {row["name"]: row for row in rows}
    defaults = RunConfig().to_dict()
    expected = {f"{section}.{key}" if isinstance(values, dict) else section
                for section, values in defaults.items() for key in (values if isinstance(values, dict) else [None])}
    assert set(by_name) == expected
    assert by_name["train.lr"] == {"name": "train.lr", "type": "float", "default": 5e-4,
                                   "comment": "peak learning rate (AdamW)"}
    assert by_name["model.text_pool"]["comment"].startswith("How the text's contrastive embedding")  # block above
    assert by_name["model.video_encoder"]["comment"].startswith("vit: tubelet ViT")  # not the `# ---` heading
    assert by_name["train.compile"]["comment"] == ""  # no comment: nothing borrowed from the line above
    table = _run_cli(capsys, "--list-keys")
    assert re.search(r"^train\.lr\s+float\s+0\.0005\s+peak learning rate", table, re.MULTILINE)
    assert re.search(r"^model\.tokenizer\s+str\s+''\s+a local directory", table, re.MULTILINE)
