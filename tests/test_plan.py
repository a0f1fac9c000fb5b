"""The Plan: a run resolved into objects once; names only at the edges."""

import dataclasses

import pytest

from retain import RunConfig
from retain.config import Plan
from retain.data.stream import BENCHMARKS, Stream
from retain.kinds import CLASSIFICATION, LM
from retain.methods import get_method_class
from retain.methods.heads import REGISTRY
from retain.profiles import Profile


def test_a_plan_holds_the_objects_its_config_names():
    plan = RunConfig(method="plate", benchmark="wordnet45", profile="smoke").plan()
    assert plan.kind is CLASSIFICATION and plan.benchmark is BENCHMARKS["wordnet45"]
    assert plan.method is get_method_class("plate")
    assert isinstance(plan.options, plan.method.config_class) and plan.options.r == 8
    assert plan.head.spec is REGISTRY[plan.config.head] and plan.head.name == "analytic"
    assert plan.head.lr == plan.config.head_lr == 5e-2
    assert plan.head.options == plan.config.head_options
    assert isinstance(plan.profile, Profile) and plan.profile.tasks == plan.config.tasks
    lm = RunConfig(method="seq-lora", benchmark="lmfar", profile="smoke").plan()
    assert lm.kind is LM and lm.head.name == "none" and lm.config.kind == "lm"
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.kind = LM  # type: ignore[misc]


def test_the_saved_config_gives_the_same_plan_and_resolved_is_its_config(tiny_config):
    cfg = tiny_config(method="inflora", method_options={"rank": 2})
    plan = cfg.plan()
    assert cfg.resolved() == plan.config
    assert Plan.saved(plan.config) == plan  # what `load` and a resume rebuild from
    assert plan.config.plan() == plan  # resolving twice changes nothing


def test_the_stream_holds_its_kind_and_json_holds_its_name(tiny_config):
    stream = tiny_config().plan().build_stream()
    assert stream.kind is CLASSIFICATION
    outline = stream.outline()
    assert outline["kind"] == "classification"
    assert Stream.from_outline(outline).kind is CLASSIFICATION


def test_the_method_builds_the_plans_head(tiny_config, tiny_bert):
    from retain.backbones import load_backbone

    plan = tiny_config(method="frozen-ncm", head="analytic",
                       head_options={"projection": 16}).plan()
    method = plan.build_method()
    assert method.run_head is plan.head
    method.setup(load_backbone(tiny_bert), plan.build_stream())
    assert type(method.head).__name__ == "AnalyticHead" and method.head.config.projection == 16


def test_every_preset_resolves_to_its_stated_numbers_and_the_users_values_win():
    from retain.catalogue import METHODS

    presets = [(m, p) for m, info in METHODS.items() for p in info.presets]
    assert {m for m, _ in presets} == {"inflora", "plate", "share", "ntk-cl", "grow",
                                       "first-session"}
    for method, name in presets:
        fields = METHODS[method].presets[name].fields
        cfg = RunConfig(method=method, benchmark="wordnet45", preset=name).resolved()
        assert cfg.preset == name and cfg.plan().config == cfg  # recorded, and stable
        for key, value in fields.items():
            if key.endswith("_options"):
                assert {k: getattr(cfg, key)[k] for k in value} == value, (method, name)
            else:
                assert getattr(cfg, key) == value, (method, name, key)
    share = RunConfig(method="share", preset="paper").resolved()
    assert (share.lr, share.weight_decay, share.warmup_ratio, share.method_options["alpha"]) == (
        4e-3, 0.1, 0.06, 8.0)
    assert RunConfig(method="inflora", preset="paper").resolved().head == "task-heads"
    assert RunConfig(method="plate", preset="authors").resolved().method_options[
        "selection"] == "official"
    mine = RunConfig(method="share", preset="paper", lr=1e-3,
                     method_options={"alpha": 16.0}).resolved()
    assert (mine.lr, mine.weight_decay, mine.method_options["alpha"]) == (1e-3, 0.1, 16.0)
    assert RunConfig(method="share").resolved().lr == 5e-4  # no preset: the defaults
    layup = RunConfig(method="first-session", preset="layup").resolved()
    assert (layup.head, layup.feature_layers) == ("analytic", 4)
    assert RunConfig(method="first-session").resolved().feature_layers == 1


def test_an_unknown_preset_is_one_line_naming_the_choices():
    from retain.errors import RetainError

    with pytest.raises(RetainError, match="plate has no preset 'paper': choose authors"):
        RunConfig(method="plate", preset="paper").check()
    with pytest.raises(RetainError, match="seq-lora has no preset 'paper': it has none"):
        RunConfig(method="seq-lora", preset="paper").check()


def test_what_the_user_gives_wins_over_a_preset_even_a_default_value(tmp_path):
    from retain.arguments import build_parser, config_from_args
    from retain.errors import RetainError

    args = build_parser().parse_args(["run", "--method", "share", "--preset", "paper",
                                      "--weight-decay", "0", "--scheduler", "constant"])
    cfg = config_from_args(args).resolved()
    assert (cfg.weight_decay, cfg.warmup_ratio, cfg.lr) == (0.0, 0.06, 4e-3)
    plain = config_from_args(build_parser().parse_args(["run", "--method", "share"])).resolved()
    assert (plain.weight_decay, plain.scheduler, plain.pooling) == (0.0, "constant", "auto")
    ntk = RunConfig(method="ntk-cl", preset="authors", pooling="auto").resolved()
    assert (ntk.pooling, ntk.scheduler) == ("auto", "cosine")
    with pytest.raises(RetainError, match="inflora's preset 'paper' is stated for "
                                          "classification streams, not 'lm' ones"):
        RunConfig(method="inflora", preset="paper", benchmark="lm3").check()
    with pytest.raises(RetainError, match="frozen-ncm has no preset 'paper'"):
        import retain

        retain.compare(RunConfig(method="inflora", preset="paper", out=str(tmp_path / "c")),
                       ["inflora", "frozen-ncm"], progress=False)
    assert not (tmp_path / "c" / "runs" / "inflora").exists()  # refused before any run
