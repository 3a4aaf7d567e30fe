"""Config composition: every preset composes and validates; typos and bad values fail early."""

from __future__ import annotations

from importlib import resources

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from maml_cli.config import UserError, resume_conflicts, validate
from tests.conftest import make_cfg


def _options(group: str):
    folder = resources.files("maml_cli.configs") / group
    # Names starting with "_" are not offered on the command line (dataset/_run: maml-eval's default).
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml") and not p.name.startswith("_"))


def test_configs_ship_inside_the_package():
    assert "sinusoid_paper" in _options("experiment")
    assert (resources.files("maml_cli.configs") / "train.yaml").is_file()
    assert (resources.files("maml_cli.configs") / "eval.yaml").is_file()


@pytest.mark.parametrize("experiment", _options("experiment"))
def test_every_experiment_preset_composes_and_validates(experiment):
    cfg = make_cfg(f"experiment={experiment}")
    validate(cfg)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


# The options that import the user's code need to be told which (docs/custom.md).
TARGETS = {
    "dataset=function": ["dataset.target=tests.test_custom_code:sample_line"],
    "model=custom": ["model.target=tests.test_custom_code:make_net"],
}


@pytest.mark.parametrize("group", ["dataset", "model", "algorithm", "logger"])
def test_every_group_option_composes(group):
    for option in _options(group):
        choice = f"{group}={option}"
        validate(make_cfg(choice, *TARGETS.get(choice, [])))
        if choice in TARGETS:
            with pytest.raises(UserError, match=f"{group}.target=module.path:name"):
                validate(make_cfg(choice))


@pytest.mark.parametrize("algorithm", _options("algorithm"))
@pytest.mark.parametrize("experiment", _options("experiment"))
def test_every_preset_composes_with_every_algorithm(experiment, algorithm):
    cfg = make_cfg(f"experiment={experiment}", f"algorithm={algorithm}")
    validate(cfg)
    assert cfg.algorithm.name == algorithm


def test_paper_settings_files_name_an_existing_preset_and_algorithm():
    experiments, algorithms = set(_options("experiment")), set(_options("algorithm"))
    for name in _options("paper"):
        experiment, algorithm = name.rsplit("_", 1)
        assert experiment in experiments and algorithm in algorithms, name


def test_an_algorithms_paper_settings_follow_the_preset():
    mamlpp = make_cfg("experiment=omniglot_5w1s", "algorithm=mamlpp")
    assert (mamlpp.model.batch_norm, mamlpp.model.downsample, mamlpp.algorithm.inner_steps) == (
        "per_step",
        "maxpool",
        5,
    )
    assert (mamlpp.algorithm.inner_lr, mamlpp.train.meta_batch_size, mamlpp.dataset.ways) == (0.1, 8, 5)
    # scored with the batch, as the authors' code (running statistics scored near chance here)
    assert mamlpp.model.bn_eval_stats == "batch"
    # MAML++'s network and test queries as the authors' code: LeakyReLU, 1 query per class on Omniglot.
    assert (mamlpp.model.activation, mamlpp.dataset.query_shots) == ("leaky_relu", 1)
    five_shot = make_cfg("experiment=omniglot_5w5s", "algorithm=mamlpp")
    assert (five_shot.model.activation, five_shot.dataset.query_shots, five_shot.train.grad_clip_value) == (
        "leaky_relu",
        1,
        None,
    )
    mini = make_cfg("experiment=miniimagenet_5w1s", "algorithm=mamlpp")
    assert (mini.train.grad_clip_value, mini.train.grad_clip_scope, mini.algorithm.inner_lr) == (10.0, "model", 0.01)
    # Reptile: the values of the commands the authors list as used for the paper.
    reptile = make_cfg("experiment=omniglot_20w1s", "algorithm=reptile")
    a = reptile.algorithm
    assert (a.train_shots, a.inner_batch_size, a.inner_steps, a.inner_lr, a.eval_inner_batch_size) == (
        10,
        20,
        10,
        0.0005,
        10,
    )
    assert (reptile.train.meta_batch_size, reptile.train.steps, reptile.eval.inner_steps) == (5, 200000, 50)
    o5 = make_cfg("experiment=omniglot_5w1s", "algorithm=reptile")
    assert (
        o5.algorithm.inner_batch_size,
        o5.algorithm.inner_steps,
        o5.train.meta_batch_size,
        o5.algorithm.train_shots,
        o5.eval.inner_steps,
        o5.eval.query_shots,
        o5.algorithm.eval_inner_batch_size,
        o5.eval.episodes,
        o5.algorithm.transductive,
    ) == (10, 5, 5, 10, 50, 1, 5, 10000, True)
    m5 = make_cfg("experiment=miniimagenet_5w5s", "algorithm=reptile")
    assert (
        m5.algorithm.eval_inner_batch_size,
        m5.algorithm.train_shots,
        m5.algorithm.inner_steps,
        m5.train.grad_clip_value,
    ) == (15, 15, 8, None)  # the MAML preset's clipping is not Reptile's
    anil = make_cfg("experiment=omniglot_5w1s", "algorithm=anil")  # ANIL's paper keeps MAML's settings
    maml = make_cfg("experiment=omniglot_5w1s")
    assert anil.algorithm.inner_lr == maml.algorithm.inner_lr and anil.train == maml.train
    # The command line still wins over both.
    assert (
        make_cfg("experiment=omniglot_5w1s", "algorithm=mamlpp", "algorithm.inner_steps=2").algorithm.inner_steps == 2
    )


def test_default_is_sinusoid_maml():
    cfg = make_cfg()
    assert cfg.dataset.name == "sinusoid" and cfg.model.name == "mlp" and cfg.algorithm.name == "maml"
    assert cfg.algorithm.first_order is False


def test_sinusoid_paper_preset_has_the_paper_hyperparameters():
    cfg = make_cfg("experiment=sinusoid_paper")
    assert (cfg.dataset.shots, cfg.dataset.query_shots) == (10, 10)
    assert list(cfg.model.hidden_sizes) == [40, 40] and cfg.model.activation == "relu"
    assert (cfg.algorithm.inner_lr, cfg.algorithm.inner_steps) == (0.01, 1)
    assert (cfg.train.steps, cfg.train.meta_batch_size, cfg.train.outer_lr) == (70000, 25, 0.001)
    assert (cfg.dataset.amplitude_min, cfg.dataset.amplitude_max) == (0.1, 5.0)


def test_query_shots_follow_shots_unless_set():
    assert make_cfg("dataset.shots=5").dataset.query_shots == 5
    assert make_cfg("dataset.shots=5", "dataset.query_shots=7").dataset.query_shots == 7


def test_fomaml_is_first_order():
    assert make_cfg("algorithm=fomaml").algorithm.first_order is True


def test_algorithm_keys_are_checked_against_that_algorithms_schema():
    assert make_cfg("algorithm=reptile", "algorithm.train_shots=5").algorithm.train_shots == 5
    with pytest.raises(ConfigCompositionException):
        make_cfg("algorithm=maml", "algorithm.train_shots=5")  # a Reptile key


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["algorithm=anil", "experiment=omniglot_5w1s", "model.batch_norm=per_step"],
            "cannot use model.batch_norm=per_step",
        ),
        (["algorithm=mamlpp", "algorithm.inner_steps=0"], "needs algorithm.inner_steps >= 1"),
        (["algorithm=mamlpp", "algorithm.min_outer_lr=0.1"], "algorithm.min_outer_lr"),
        (["algorithm=metasgd", "algorithm.lr_init_range=[0.1,0.01]"], "lr_init_range must be"),
        (["algorithm=reptile", "algorithm.inner_batch_size=0"], "inner_batch_size must be >= 1"),
        (["algorithm=reptile", "algorithm.outer_step_size=0"], "outer_step_size must be > 0"),
        (["eval.query_shots=0"], "eval.query_shots"),
        (["train.time_limit_minutes=0"], "time_limit_minutes"),
        (["experiment=omniglot_5w1s", "model.bn_momentum=0"], "bn_momentum"),
    ],
)
def test_validate_explains_bad_algorithm_settings(overrides, message):
    with pytest.raises(UserError, match=message):
        validate(make_cfg(*overrides))


@pytest.mark.parametrize("override", ["train.stepz=3", "dataset.shotz=3", "algorithm.inner_lrr=0.1", "model.width=3"])
def test_unknown_key_fails_at_composition(override):
    with pytest.raises(ConfigCompositionException) as info:
        make_cfg(override)
    key = override.split("=")[0].split(".")[-1]
    assert f"Key '{key}' not in" in str(info.value.__cause__)
    # Hydra lets "+key=value" add keys; validate() still refuses what the schema lacks.
    with pytest.raises(UserError, match=f"Key '{key}' not in"):
        validate(make_cfg("+" + override))


@pytest.mark.parametrize("override", ["train.steps=many", "algorithm.first_order=maybe", "dataset.shots=1.5"])
def test_wrong_type_fails_at_composition(override):
    with pytest.raises(ConfigCompositionException) as info:
        make_cfg(override)
    assert isinstance(info.value.__cause__, ValidationError)


def test_unknown_group_option_fails():
    with pytest.raises(Exception, match="dataset"):
        make_cfg("dataset=imagenet21k")


@pytest.mark.parametrize(
    "override,message",
    [
        ("dataset.shots=0", "dataset.shots must be >= 1"),
        ("dataset.ways=5", "sinusoid is regression"),
        ("train.meta_batch_size=0", "train.meta_batch_size"),
        ("train.task_batching=pmap", "train.task_batching must be one of"),
        ("algorithm.inner_lr=-1", "algorithm.inner_lr"),
        ("eval.episodes=0", "eval.episodes"),
        ("dataset.x_min=6", "x_min"),
    ],
)
def test_validate_explains_bad_values(override, message):
    with pytest.raises(UserError, match=message):
        validate(make_cfg(override))


def test_validate_lists_every_problem():
    with pytest.raises(UserError) as info:
        validate(make_cfg("dataset.shots=0", "train.outer_lr=0"))
    assert "dataset.shots" in str(info.value) and "train.outer_lr" in str(info.value)


def test_resume_conflicts_ignore_length_but_not_math():
    saved = make_cfg("train.steps=100")
    assert resume_conflicts(saved, make_cfg("train.steps=200", "train.progress=false")) == []
    conflicts = resume_conflicts(saved, make_cfg("train.steps=100", "algorithm.inner_lr=0.5"))
    assert conflicts == ["algorithm.inner_lr: 0.01 -> 0.5"]


def test_resume_refuses_longer_training_when_the_step_size_is_annealed_over_it():
    """MAML++'s cosine and Reptile's linear annealing span train.steps: changing it changes the math."""
    for algorithm in ("reptile", "mamlpp"):
        saved = make_cfg(f"algorithm={algorithm}", "train.steps=100")
        assert resume_conflicts(saved, make_cfg(f"algorithm={algorithm}", "train.steps=200")) == [
            "train.steps: 100 -> 200 (this algorithm anneals its outer step size over train.steps)"
        ]
    saved = make_cfg("algorithm=mamlpp", "algorithm.cosine_annealing=false", "train.steps=100")
    assert (
        resume_conflicts(saved, make_cfg("algorithm=mamlpp", "algorithm.cosine_annealing=false", "train.steps=200"))
        == []
    )


def test_miniimagenet_presets_follow_the_original_clipping_and_test_queries():
    """The original clipped the gradient of a sum over N*Q query losses / K: N*Q/K times ours."""
    for shots in (1, 5):
        cfg = make_cfg(f"experiment=miniimagenet_5w{shots}s")
        d = cfg.dataset
        assert cfg.train.grad_clip_value == pytest.approx(10 * d.shots / (d.ways * d.query_shots))
        assert cfg.eval.query_shots == shots  # K query images per test class, as the original scored


def test_resume_accepts_a_config_saved_before_a_key_existed():
    saved = OmegaConf.create(OmegaConf.to_container(make_cfg(), resolve=True))
    del saved.train["grad_clip_value"]  # as written by a version without train.grad_clip_value
    assert resume_conflicts(saved, make_cfg()) == []
    assert resume_conflicts(saved, make_cfg("train.grad_clip_value=10")) == ["train.grad_clip_value: None -> 10.0"]


def test_resume_may_change_how_the_math_is_executed():
    saved = make_cfg("train.task_batching=vmap", "train.remat=false")
    assert resume_conflicts(saved, make_cfg("train.task_batching=map", "train.remat=true")) == []
