"""The heads built from statistics (analytic, aligned) and the first-session baseline: the
invariants of issue 12 on a tiny BERT and on synthetic features."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from retain.data.stream import Split, Task
from retain.engine import train_stream
from retain.errors import RetainError
from retain.methods.baselines import SeqLoRA
from retain.methods.heads import REGISTRY as HEAD_REGISTRY
from retain.methods.heads import AlignedHead, AnalyticHead, StatisticsHead
from retain.methods.heads.aligned import AlignedConfig
from retain.methods.heads.analytic import AnalyticConfig, picked
from tests.conftest import check_exact_resume, torchrun


def _task(index, classes):
    empty = Split([], np.zeros(0, int))
    return Task(index, classes, empty, empty)


def _train_features(method, cfg):
    """Every training item's pooled features, labels and positions, task by task, from the
    trained method's backbone (float32, as the head sees them)."""

    stream = cfg.plan().build_stream(method.backbone)
    out = []
    with torch.no_grad():
        for task in stream.tasks:
            batch = method.backbone.batch(task.train.items, cfg.resolved().max_length)
            out.append((method.features(batch), torch.as_tensor(task.train.labels)))
    return out


def test_analytic_head_on_a_frozen_backbone_is_ridge_on_all_tasks_at_once(tiny_config):
    """After the last task, W equals ridge regression fitted on every task's features at once
    with the same lambda; a head that kept only the last task's G and Q fails."""
    cfg = tiny_config(method="frozen-ncm", head="analytic", pooling="mean",
                      head_options={"projection": 48, "lambdas": [0.1, 1.0, 10.0]})
    res, method = train_stream(cfg, progress=False)
    head = method.head
    feats = _train_features(method, cfg)
    H = torch.cat([head.expand(f) for f, _ in feats]).double().numpy()
    Y = np.eye(6)[torch.cat([y for _, y in feats]).numpy()]
    lam = head.ridge
    ridge = np.linalg.solve(H.T @ H + lam * np.eye(H.shape[1]), H.T @ Y)
    W = head.solution().numpy()
    assert np.abs(W - ridge).max() <= 1e-6 * max(1.0, np.abs(ridge).max())
    assert np.allclose(head.gram.numpy(), H.T @ H) and np.allclose(head.targets.numpy(), H.T @ Y)
    assert len(head.choices) == 3 and lam in (0.1, 1.0, 10.0)
    # what it stores: G's upper triangle (48 x 48), Q (48 x 6) and the seen-class mask, nothing
    # of the backbone
    assert res["cost"]["stored_parameters"] == 48 * 49 // 2 + 48 * 6 + 6


def test_small_lambdas_are_scored_exactly_while_g_is_singular():
    """With fewer items than the projection is wide, G is singular; the second task's held-out
    scores and W at lambda 0.01 are those of the exact float64 ridge. (G rounded to float32
    between tasks had negative eigenvalues far larger than 0.01: W was off by orders of
    magnitude and the held-out score fell.)"""
    gen = torch.Generator().manual_seed(3)
    head = AnalyticHead(6, 4, AnalyticConfig(projection=64, lambdas=[0.01], holdout=4))
    rows, labels = [], []
    for t in range(2):
        x = 1000 * torch.randn(24, 6, generator=gen)  # large entries: large rounding errors
        y = torch.arange(24) % 2 + 2 * t
        batch = {"x": x, "labels": y, "index": torch.arange(24)}
        head.begin_task(_task(t, [2 * t, 2 * t + 1]))
        head.end_task(_task(t, [2 * t, 2 * t + 1]), lambda b=batch: [b], lambda b: b["x"])
        rows.append(head.expand(x).double())
        labels.append(y)
    H, Y = torch.cat(rows), F.one_hot(torch.cat(labels), 4).double()
    assert torch.linalg.matrix_rank(H.T @ H) < 64
    exact = torch.linalg.solve(H.T @ H + 0.01 * torch.eye(64, dtype=torch.float64), H.T @ Y)
    # measured 4.0e-6 (the system's condition number times float64's rounding); with G rounded
    # to float32 between tasks, 3.8 (and a held-out score of 0.0 for 0.167)
    assert (head.solution() - exact).abs().max() <= 1e-4 * exact.abs().max()
    keep = torch.ones(48, dtype=torch.bool)
    keep[24::4] = False  # task 2's held-out items: positions 0, 4, ... of its data
    fit = torch.linalg.solve(H[keep].T @ H[keep] + 0.01 * torch.eye(64, dtype=torch.float64),
                             H[keep].T @ Y[keep])
    held = (H[~keep] @ fit).argmax(-1) == torch.cat(labels)[~keep]
    assert head.choices[1]["accuracy"][0.01] == pytest.approx(float(held.double().mean()))


def test_analytic_lambda_is_picked_on_held_out_items_and_refitted_on_all():
    torch.manual_seed(0)
    head = AnalyticHead(4, 2, AnalyticConfig(projection=0, lambdas=[1e-2, 1e4], holdout=2))
    x = torch.randn(40, 4)
    y = (x[:, 0] > 0).long()  # separable: a small lambda classifies the held-out half better
    batch = {"x": x, "labels": y, "index": torch.arange(40)}
    head.begin_task(_task(0, [0, 1]))
    head.end_task(_task(0, [0, 1]), lambda: [batch], lambda b: b["x"])
    scores = head.choices[0]["accuracy"]
    assert head.ridge == 1e-2 and scores[1e-2] >= scores[1e4]
    refit = np.linalg.solve(x.double().T @ x.double() + 1e-2 * np.eye(4),
                            x.double().T @ np.eye(2)[y])
    assert np.allclose(head.solution().numpy(), refit)  # all items, the held-out ones too
    mse = AnalyticHead(4, 2, AnalyticConfig(projection=0, lambdas=[1e-2, 1e4], select="mse"))
    mse.begin_task(_task(0, [0, 1]))
    mse.end_task(_task(0, [0, 1]), lambda: [batch], lambda b: b["x"])
    assert set(mse.choices[0]["mse"]) == {1e-2, 1e4}


def test_pooled_picks_lambda_on_every_tasks_held_out_items_without_keeping_them():
    """``select='pooled'``: each task's held-out items are scored when the task ends (the same
    scores as the per-task rule records) and lambda is the best over all of them so far,
    weighted by their number, not the last task's alone; only scores are kept, and they come
    back from a checkpoint's JSON so the next task picks the same."""
    import json

    def fit(select, resume_after=None):
        gen = torch.Generator().manual_seed(2)
        config = AnalyticConfig(projection=16, lambdas=[0.01, 1.0, 100.0], select=select,
                                holdout=3)
        head = AnalyticHead(5, 6, config)
        for t in range(3):
            n = (60, 60, 9)[t]  # the last task holds out 3 items: a noisy vote on its own
            x = torch.randn(n, 5, generator=gen) + t
            y = (x[:, 0] + torch.randn(n, generator=gen) > t).long() + 2 * t  # noisy labels
            batch = {"x": x, "labels": y, "index": torch.arange(n)}
            head.begin_task(_task(t, [2 * t, 2 * t + 1]))
            head.end_task(_task(t, [2 * t, 2 * t + 1]), lambda b=batch: [b], lambda b: b["x"])
            if t == resume_after:
                restored = AnalyticHead(5, 6, config)
                restored.load_state_dict(head.state_dict())
                restored.load_state(json.loads(json.dumps(head.state())))
                head = restored
        return head

    pooled, single = fit("pooled"), fit("accuracy")
    assert [c["pooled"] for c in pooled.choices] == [c["accuracy"] for c in single.choices]
    assert [c["held"] for c in pooled.choices] == [20.0, 20.0, 3.0]
    votes = {lam: sum(c["held"] * c["pooled"][lam] for c in pooled.choices) / 43
             for lam in (0.01, 1.0, 100.0)}
    assert pooled.ridge == max(votes, key=votes.get)
    assert single.ridge != pooled.ridge  # the last task alone picks another value here
    assert fit("pooled", resume_after=1).ridge == pooled.ridge
    # either rule's stored scores give the other's pick
    assert picked(single.choices, "pooled") == pooled.ridge
    assert picked(pooled.choices, "accuracy") == single.ridge
    with pytest.raises(RetainError, match="cannot give rule mse"):
        picked(single.choices, "mse")
    # a run that turned to pooled at its last task pools that task's scores alone
    last = pooled.choices[2]["pooled"]
    assert picked([*single.choices[:2], pooled.choices[2]], "pooled") == max(last, key=last.get)
    assert torch.equal(pooled.solution(), fit("pooled", resume_after=1).solution())
    # weighted by items: an earlier task of 1000 held-out items outvotes one of 20 (an
    # unweighted mean of the two tasks' scores would pick 1.0)
    head = AnalyticHead(5, 6, AnalyticConfig(projection=16, lambdas=[0.01, 1.0, 100.0],
                                             select="pooled", holdout=3))
    head.load_state({"lambda": 1.0, "choices": [{"lambda": 1.0, "task": 0, "held": 1000.0,
                     "pooled": {"0.01": 0.9, "1.0": 0.89, "100.0": 0.5}}]})
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(60, 5, generator=gen) + 1
    batch = {"x": x, "labels": (x[:, 0] + torch.randn(60, generator=gen) > 1).long() + 2,
             "index": torch.arange(60)}
    head.begin_task(_task(1, [2, 3]))
    head.end_task(_task(1, [2, 3]), lambda: [batch], lambda b: b["x"])
    new = head.choices[1]["pooled"]
    assert head.ridge == 0.01 and max(new, key=lambda lam: 0.5 * (new[lam] + {
        0.01: 0.9, 1.0: 0.89, 100.0: 0.5}[lam])) == 1.0


def test_an_analytic_checkpoint_holds_the_upper_triangle_of_g_once():
    head = AnalyticHead(6, 3, AnalyticConfig(projection=5, lambdas=[1.0]))
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(1))
    batch = {"x": x, "labels": torch.arange(40) % 3, "index": torch.arange(40)}
    head.begin_task(_task(0, [0, 1, 2]))
    head.end_task(_task(0, [0, 1, 2]), lambda: [batch], lambda b: b["x"])
    h = head.expand(x).double()
    assert torch.allclose(head.gram, h.T @ h, rtol=1e-12) and torch.equal(head.gram, head.gram.T)
    saved = head.state_dict()
    assert "gram" not in saved and saved["gram_triangle"].numel() == 5 * 6 // 2
    assert saved["gram_triangle"].dtype == torch.float64
    fresh = AnalyticHead(6, 3, AnalyticConfig(projection=5, lambdas=[1.0]))
    fresh.load_state_dict(saved)
    assert torch.equal(fresh.gram, head.gram)  # exactly, both triangles: a resume goes on alike


def test_analytic_statistics_do_not_depend_on_how_rows_arrive(monkeypatch):
    """G, Q, the held-out scores and W are the same whether a task's rows come in one batch or
    many, and whether they are summed a product per batch or per thousand rows (the held-out
    rows are chosen by position, whatever the order of the batches); to float32 rounding, as
    the projection of a row in float32 moves by that much with the size of its batch."""
    from retain.methods.heads import analytic

    x = torch.randn(90, 6, generator=torch.Generator().manual_seed(2))
    labels, index = torch.arange(90) % 3, torch.arange(90)

    def fit(chunk, order, size):
        monkeypatch.setattr(analytic, "CHUNK", chunk)
        head = AnalyticHead(6, 3, AnalyticConfig(projection=20, lambdas=[0.1, 1.0, 10.0]))
        batches = [{"x": x[order[i:i + size]], "labels": labels[order[i:i + size]],
                    "index": index[order[i:i + size]]} for i in range(0, 90, size)]
        head.begin_task(_task(0, [0, 1, 2]))
        head.end_task(_task(0, [0, 1, 2]), lambda: batches, lambda b: b["x"])
        return head

    one = fit(1024, torch.arange(90), 90)
    for chunk, order, size in ((1, torch.arange(90), 7), (16, torch.randperm(90), 4)):
        other = fit(chunk, order, size)
        assert torch.allclose(other.gram, one.gram, rtol=1e-6, atol=0)
        assert torch.allclose(other.targets, one.targets, rtol=1e-6, atol=0)
        assert other.choices == one.choices
        w = one.solution()  # G's float32 rounding, amplified by the solve: 2.4e-6 measured
        assert (other.solution() - w).abs().max() <= 1e-5 * w.abs().max()


def test_analytic_head_options_are_checked():
    with pytest.raises(RetainError, match="select must be"):
        AnalyticConfig(select="loss")
    with pytest.raises(RetainError, match="lambda must be positive"):
        AnalyticConfig(lambdas=[0.0])
    assert AnalyticConfig.from_options({"lambdas": "1,10"}).lambdas == [1.0, 10.0]


def test_head_options_need_a_head_that_has_them(tiny_config):
    with pytest.raises(RetainError, match="has no options"):
        tiny_config(head="growing", head_options={"projection": 2}).resolved()
    with pytest.raises(RetainError, match="unknown option 'width'"):
        tiny_config(head="analytic", head_options={"width": 2}).resolved()
    cfg = tiny_config(head="aligned").resolved()
    assert cfg.head_options["samples"] == 256 and cfg.head_options["covariance"] == "full"


@pytest.mark.parametrize("covariance", ["full", "diagonal"])
def test_aligned_head_stores_each_class_mean_and_covariance(tiny_config, covariance):
    cfg = tiny_config(method="frozen-ncm", head="aligned", pooling="mean",
                      head_options={"covariance": covariance, "epochs": 1})
    res, method = train_stream(cfg, progress=False)
    head = method.head
    feats = _train_features(method, cfg)
    f = torch.cat([x for x, _ in feats]).double()
    y = torch.cat([y for _, y in feats])
    assert head.order == list(range(6))
    for c in range(6):
        mean, cov = f[y == c].mean(0), torch.cov(f[y == c].T)
        assert torch.allclose(head.means[c], mean, atol=1e-6)
        want = cov if covariance == "full" else cov.diagonal()
        assert torch.allclose(head.covs[c], want, atol=1e-6)
        assert head.counts[c] == (y == c).sum()
    d = f.shape[1]
    per_class = (d * d + d + 1) if covariance == "full" else 2 * d + 1
    assert res["cost"]["stored_parameters"] == 6 * per_class + (d + 1) * 6 + 6


def test_aligned_moments_pool_a_class_seen_again():
    head = AlignedHead(2, 2, AlignedConfig(epochs=0))
    a, b = torch.randn(5, 2), torch.randn(7, 2) + 1
    for i, x in enumerate((a, b)):
        head.begin_task(_task(i, [0]))
        batch = {"x": x, "labels": torch.zeros(len(x), dtype=torch.long)}
        head.end_task(_task(i, [0]), lambda batch=batch: [batch], lambda b: b["x"])
    both = torch.cat([a, b]).double()
    assert torch.allclose(head.means[0], both.mean(0))
    assert torch.allclose(head.covs[0], torch.cov(both.T))


def test_alignment_calibrates_separately_trained_task_heads():
    """Two tasks of two Gaussian classes each; the task-local classifiers are left at zero
    (uncalibrated across tasks). Before alignment every sample goes to one task's classes;
    after it, fresh samples of all four classes are classified correctly."""
    torch.manual_seed(0)
    centres = torch.tensor([[4., 0, 0], [0, 4, 0], [0, 0, 4], [-4, -4, -4]])
    head = AlignedHead(3, 4, AlignedConfig(samples=64, epochs=5, lr=0.1, seed=0))
    for t, classes in enumerate(([0, 1], [2, 3])):
        x = torch.cat([centres[c] + 0.5 * torch.randn(50, 3) for c in classes])
        y = torch.tensor(classes).repeat_interleave(50)
        head.begin_task(_task(t, classes))
        torch.nn.init.zeros_(head.classifier.weight)
        torch.nn.init.zeros_(head.classifier.bias)
        if t == 1:
            before = head.logits(centres).argmax(-1)
            assert (before == torch.arange(4)).sum() <= 2
        head.end_task(_task(t, classes), lambda x=x, y=y: [{"x": x, "labels": y}],
                      lambda b: b["x"])
    test = torch.cat([centres[c] + 0.5 * torch.randn(100, 3) for c in range(4)])
    pred = head.logits(test).argmax(-1)
    assert (pred == torch.arange(4).repeat_interleave(100)).float().mean() > 0.95


@pytest.mark.parametrize("head", [h for h, spec in HEAD_REGISTRY.items()
                                  if issubclass(type(spec.build(4, 2, {})), StatisticsHead)])
def test_statistics_heads_resume_exactly(tiny_config, monkeypatch, tmp_path, head):
    options = {"analytic": {"projection": 64}, "aligned": {"epochs": 2}}.get(head, {})
    check_exact_resume(tiny_config, monkeypatch, tmp_path, SeqLoRA, method="seq-lora",
                       head=head, head_options=options, lr=1e-2)


def test_first_session_trains_the_adapter_on_the_first_task_only(tiny_config, tmp_path):
    from safetensors.torch import load_file

    opts = {"projection": 64}
    res, method = train_stream(tiny_config(method="first-session", head_options=opts,
                                           out=str(tmp_path / "all")), progress=False)
    assert res["head"] == "analytic"
    steps = [p["steps"] for p in res["per_task"]]
    assert steps[0] > 0 and steps[1:] == [0, 0]  # frozen after task 1; the head needs no steps
    one, _ = train_stream(tiny_config(method="first-session", head_options=opts, tasks=1,
                                      out=str(tmp_path / "one")), progress=False)
    after_one = load_file(str(next((tmp_path / "one" / "checkpoint").glob("*.safetensors"))))
    final = method.model.state_dict()
    lora = [k for k in after_one if "lora_" in k]
    assert lora and all(torch.equal(after_one[k], final[k[len("model."):]]) for k in lora)
    # with a linear head the later tasks still train, the head alone
    res, grow = train_stream(tiny_config(method="first-session", head="growing",
                                         out=str(tmp_path / "g")), progress=False)
    assert all(p["steps"] > 0 for p in res["per_task"])
    train_stream(tiny_config(method="first-session", head="growing", tasks=1,
                             out=str(tmp_path / "g1")), progress=False)
    grow_one = load_file(str(next((tmp_path / "g1" / "checkpoint").glob("*.safetensors"))))
    assert all(torch.equal(grow_one[k], grow.model.state_dict()[k[len("model."):]])
               for k in lora)


def test_two_processes_give_the_same_analytic_head(tiny_bert, tmp_path):
    """G and Q are summed across processes, and the held-out items are picked by position:
    with 27 training items a task (uneven shards) G, Q, lambda and W equal one process's."""
    from safetensors.torch import load_file

    from tests.conftest import make_rows

    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in make_rows(11)))
    args = ["run", "--method", "frozen-ncm", "--head", "analytic", "--head-set",
            "projection=40", "--data", str(data), "--classes-per-task", "3", "--backbone",
            tiny_bert, "--profile", "smoke", "--no-retention", "--quiet", "--pooling", "mean"]
    heads = []
    for n in (1, 2):
        out = tmp_path / f"p{n}"
        torchrun(args, out, n)
        state = json.loads((out / "checkpoint" / "state.json").read_text())
        assert json.loads((out / "results.json").read_text())["cost"]["processes"] == n
        weights = load_file(str(next((out / "checkpoint").glob("*.safetensors"))))
        heads.append((weights, state["method_state"]["head"]))
    (w1, s1), (w2, s2) = heads
    for w in (w1, w2):  # the checkpoint holds G's upper triangle, row after row
        upper = torch.zeros(40, 40, dtype=torch.float64)
        upper[tuple(torch.triu_indices(40, 40))] = w["head.gram_triangle"].double()
        w["head.gram"] = upper + upper.T - torch.diag(upper.diagonal())
    assert torch.allclose(w1["head.gram"], w2["head.gram"], rtol=1e-9, atol=1e-9)
    assert torch.allclose(w1["head.targets"], w2["head.targets"], rtol=1e-9, atol=1e-9)
    assert s1["choices"] == s2["choices"] and s1["lambda"] == s2["lambda"]
    from retain.methods.heads.analytic import cholesky_ridge as solve

    assert torch.allclose(solve(w1["head.gram"], w1["head.targets"], s1["lambda"]),
                          solve(w2["head.gram"], w2["head.targets"], s2["lambda"]), atol=1e-8)


def test_the_analytic_heads_classifier_learns_fast_by_default(tiny_config):
    assert tiny_config(method="inflora").resolved().head_lr == 5e-2  # analytic: measured default
    assert tiny_config(method="inflora", head="task-heads").resolved().head_lr == 5e-4  # = lr
    assert tiny_config(method="plate", head_lr=1e-3).resolved().head_lr == 1e-3
    assert tiny_config(method="seq-lora").resolved().head == "growing"  # the naive reference


def test_a_run_scored_at_another_rules_lambda_is_the_run_made_with_that_rule(tiny_config):
    """The head's solution never feeds back into training: InfLoRA runs made with
    ``select='accuracy'`` and with ``'pooled'``, their last checkpoints' heads solved at any one
    lambda, score the same on the test and validation splits; so the first, solved at the
    lambda ``pooled`` picks from its stored scores, is the second run (what
    ``benchmarks/rule_after.py`` relies on)."""
    import retain
    from retain.engine import prepared_engine

    engines, runs = {}, {}
    for rule in ("accuracy", "pooled"):
        config = tiny_config(method="inflora", validation=0.25, out=str(tiny_config().out) + rule,
                             seed=1, head_options={"projection": 64, "select": rule, "holdout": 2,
                                                   "lambdas": [1.0, 10.0, 100.0]})
        runs[rule] = retain.run(config, progress=False)
        engines[rule] = prepared_engine(config, Path(config.out) / "checkpoint")

    def scored(engine, lam):
        engine.method.head.resolve(lam)
        return (engine.evaluate(engine.stream.tasks)["matrix"],
                engine.validate(engine.stream.tasks))

    heads = {rule: engine.method.head for rule, engine in engines.items()}
    pick = picked(heads["accuracy"].choices, "pooled")
    assert pick == heads["pooled"].ridge != heads["accuracy"].ridge  # the rules differ here
    by_lambda = {lam: scored(engines["accuracy"], lam) for lam in (1.0, 10.0, 100.0)}
    assert by_lambda[1.0] != by_lambda[100.0]  # lambda does decide the figures
    assert all(scored(engines["pooled"], lam) == v for lam, v in by_lambda.items())
    assert by_lambda[pick] == (runs["pooled"]["matrix"][-1],
                               runs["pooled"]["validation_matrix"][-1])
    other = tiny_config(method="inflora", validation=0.25, out=runs["pooled"]["config"]["out"],
                        seed=2, head_options={"projection": 64, "select": "pooled", "holdout": 2,
                                              "lambdas": [1.0, 10.0, 100.0]})
    with pytest.raises(RetainError, match=r"another config \(class_order_seed, seed differ\)"):
        prepared_engine(other, Path(other.out) / "checkpoint")
