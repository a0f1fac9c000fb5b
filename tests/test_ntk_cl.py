"""NTK-CL's invariants: inert modules at the start, padding that changes nothing, averaged
modules that are the mean of the end-of-task snapshots, stored numbers that do not grow with
the number of tasks, and an orthogonality term that pushes features out of the old
prototypes' span."""

import pytest
import torch

from retain.backbones import load_backbone
from retain.engine import train_stream
from retain.kinds import CLASSIFICATION
from retain.methods.heads import REGISTRY, RunHead
from retain.methods.ntk_cl import NTKCL, NTKCLOptions, losses
from tests.conftest import check_exact_resume


class _Stream:
    kind, num_classes = CLASSIFICATION, 4

    def __len__(self):
        return 2


def _method(name="tiny-bert", **options) -> NTKCL:
    head = RunHead("prototypes", REGISTRY["prototypes"], {}, 3e-4)
    method = NTKCL(NTKCLOptions.from_options(options), head)
    method.setup(load_backbone(name), _Stream())
    return method.eval()


def _text_batch(method, padding=True, max_length=16):
    enc = method.backbone.processor(["a small cat", "the quick brown fox jumps over it"],
                                    padding=padding, truncation=True, max_length=max_length,
                                    return_tensors="pt")
    return dict(enc)


def _perturb(blocks, seed=0):
    """Make every module act (the zero-initialised up-projections and gates non-zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in blocks.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-vit"])
def test_zero_initialised_modules_leave_the_encoder_unchanged(name):
    method = _method(name)
    if name == "tiny-vit":
        batch = {"pixel_values": torch.randn(3, 3, 32, 32, generator=torch.Generator()
                                             .manual_seed(0))}
    else:
        batch = _text_batch(method)
    with torch.no_grad():
        plain = method.pooled(batch, None)
        for family in ("adapter", "prompt"):
            assert torch.equal(method.pooled(batch, method.current, family), plain)
        fc, fp, fm = method.views(batch)
        assert torch.equal(fm, torch.cat([plain, plain], -1))
        _perturb(method.current)  # the hooks really act once the modules are not inert
        for family in ("adapter", "prompt"):
            assert (method.pooled(batch, method.current, family) - plain).abs().max() > 1e-3


def test_padding_tokens_change_nothing():
    method = _method()
    _perturb(method.current)
    short = _text_batch(method)
    long = _text_batch(method, padding="max_length", max_length=40)
    assert long["input_ids"].shape[1] == 40 > short["input_ids"].shape[1]
    with torch.no_grad():
        for family in ("adapter", "prompt"):
            a = method.pooled(short, method.current, family)
            b = method.pooled(long, method.current, family)
            assert torch.allclose(a, b, atol=1e-5), (family, (a - b).abs().max())


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-vit"])
def test_passes_stacked_in_one_forward_equal_one_forward_each(name):
    """Several passes over a batch run as one forward over the batch stacked (each slice with
    its own modules and family): each slice's output is its own pass's, with every module
    acting, the two copies apart and a padded text batch; evaluation's views (the four passes
    in one forward) equal training's (two forwards of two)."""
    method = _method(name)
    batch = ({"pixel_values": torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))}
             if name == "tiny-vit" else _text_batch(method))
    _perturb(method.averaged, seed=1)
    _perturb(method.current, seed=2)
    method.tasks_done += 1
    segments = [(None, ""), (method.current, "prompt"), (method.averaged, "adapter"),
                (method.current, "adapter"), (method.averaged, "prompt")]
    with torch.no_grad():
        stacked = method.passes(batch, segments)
        for (blocks, family), got in zip(segments, stacked, strict=True):
            alone = method.pooled(batch, blocks, family)
            assert torch.allclose(got, alone, atol=1e-5), (family, (got - alone).abs().max())
        evaluated = method.views(batch)
        # outside a pass the hooks stand aside: the encoder alone
        assert torch.equal(method.backbone.pooled(batch, method.model),
                           method.pooled(batch, None))
    trained = method.views(batch)
    for a, b in zip(evaluated, trained, strict=True):
        assert torch.allclose(a, b.detach(), atol=1e-5)


def test_averaged_modules_are_the_mean_of_the_end_of_task_snapshots(tiny_config, monkeypatch):
    snapshots = []
    average = NTKCL.average

    def record(self):
        snapshots.append([p.detach().clone() for p in self.current.parameters()])
        average(self)

    monkeypatch.setattr(NTKCL, "average", record)
    _, method = train_stream(tiny_config(method="ntk-cl", lr=1e-2), progress=False)
    assert len(snapshots) == 3 and int(method.tasks_done) == 3
    for avg, *snaps in zip(method.averaged.parameters(), *snapshots, strict=True):
        assert torch.allclose(avg, torch.stack(snaps).mean(0), atol=1e-6)
    moved = [not torch.equal(a, b) for a, b in zip(snapshots[0], snapshots[2], strict=True)]
    assert sum(moved) > len(moved) // 2  # the snapshots differ: the mean is not trivially one


def test_stored_numbers_do_not_grow_with_the_tasks(tiny_config, monkeypatch):
    shapes = []
    end_task = NTKCL.end_task

    def record(self, task, batches):
        end_task(self, task, batches)
        shapes.append({k: tuple(v.shape) for k, v in self.stored_tensors().items()})

    monkeypatch.setattr(NTKCL, "end_task", record)
    res, method = train_stream(tiny_config(method="ntk-cl", head="prototypes"), progress=False)
    assert shapes[0] == shapes[1] == shapes[2]
    modules = 2 * sum(p.numel() for p in method.current.parameters()) + sum(
        p.numel() for p in method.fusion.parameters())
    classes = 6 * (2 * 32) + 6  # prototypes of f_m (width 2d) and counts: the class statistics
    assert res["cost"]["stored_parameters"] == modules + classes + 1  # + the task counter
    assert not any(k.startswith("model.") for k in method.stored_tensors())  # encoder untouched


def test_ntk_cl_resumes_exactly(tiny_config, monkeypatch, tmp_path):
    check_exact_resume(tiny_config, monkeypatch, tmp_path, NTKCL, method="ntk-cl", lr=1e-2)


@pytest.mark.parametrize("head", ["analytic", "aligned", "growing"])
def test_every_head_applies(tiny_config, head):
    res, method = train_stream(tiny_config(method="ntk-cl", head=head), progress=False)
    assert method.anchors is not None and int(method.anchors.counts.gt(0).sum()) == 6
    assert len(res["matrix"]) == 3


def test_the_orthogonality_term_pushes_features_out_of_the_old_span():
    """Training the current modules on the orthogonality term lowers the overlap of the fused
    features with the old prototypes' span (the averaged half cannot move)."""
    method = _method()
    batch = _text_batch(method)
    with torch.no_grad():
        _perturb(method.averaged, seed=1)
        method.tasks_done += 1
        old = method.features(batch) + 0.1 * torch.randn(2, 64, generator=torch.Generator()
                                                        .manual_seed(2))
    basis = losses.prototype_basis(old, 40)
    assert basis.shape == (64, 2)
    assert torch.allclose(basis.T @ basis, torch.eye(2), atol=1e-5)

    def overlap():  # share of the fused features' squared norm inside the old span
        with torch.no_grad():
            f = method.features(batch)
            return float(((f @ basis).pow(2).sum(-1) / f.pow(2).sum(-1)).mean())

    before = overlap()
    opt = torch.optim.Adam(list(method.trainable().values()), lr=1e-2)
    for _ in range(30):
        loss = losses.orthogonality(list(method.views(batch)), basis)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert overlap() < 0.7 * before, (before, overlap())


def test_contrast_pulls_classes_together_and_pushes_old_prototypes_away():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1])
    protos, proto_labels = torch.randn(3, 8, generator=g), torch.tensor([2, 3, 4])
    x = torch.randn(4, 8, generator=g, requires_grad=True)
    opt = torch.optim.Adam([x], lr=0.05)
    first = None
    for _ in range(100):
        loss = losses.contrast(x, labels, protos, proto_labels, 0.1)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.1 * first
    f = torch.nn.functional.normalize(x.detach(), dim=-1)
    p = torch.nn.functional.normalize(protos, dim=-1)
    same = min(float(f[0] @ f[1]), float(f[2] @ f[3]))
    assert same > float((f @ p.T).max()) + 0.5 and same > float((f[:2] @ f[2:].T).max()) + 0.5
    # no positive pair: nothing to contrast; the authors' form counts it as 0 as well
    assert float(losses.contrast(x[:1].detach(), labels[:1], protos, proto_labels, 0.1)) == 0
    assert float(losses.official_contrast(x[:1].detach(), labels[:1], protos, proto_labels,
                                          0.1)) == 0
    # the authors' form enters their loss negated: minimising it pulls classes apart again
    opt = torch.optim.Adam([x], lr=0.05)
    for _ in range(50):
        loss = losses.official_contrast(x, labels, protos, proto_labels, 0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    f = torch.nn.functional.normalize(x.detach(), dim=-1)
    assert min(float(f[0] @ f[1]), float(f[2] @ f[3])) < same - 0.3


def test_ntk_cl_refuses_language_modelling_and_decoders():
    from retain.errors import RetainError

    with pytest.raises(RetainError, match="BERT- or ViT-style encoder"):
        _method("tiny-llama")


def test_retention_views(tiny_config):
    """'bypassed' compares the frozen encoder itself (equal to the untouched one, bit for bit,
    after training); 'modules' the mean of the four passes, which training moves."""
    _, method = train_stream(tiny_config(method="ntk-cl", lr=1e-2), progress=False)
    fresh = load_backbone(method.backbone.name)
    batch = _text_batch(method)
    method.eval()
    with torch.no_grad():
        untouched = fresh.features(batch)
        method.config.retention_view = "bypassed"
        assert torch.equal(method.represent(batch), untouched)
        method.config.retention_view = "modules"
        assert (method.represent(batch) - untouched).abs().max() > 1e-4


# --- loss() as a whole ------------------------------------------------------------------------
TEXTS = ["a small cat", "the quick brown fox", "rain and snow", "a cold grey storm"]


def _second_task(official: bool, **options):
    """A method on its second task (classes 0, 1) with old prototypes of classes 2 and 3 near
    the batch's features, every module acting, and the current modules moved away from where
    the task started; with the batch, its labels, the old prototypes and that start."""
    from types import SimpleNamespace

    method = _method(official_losses=official, **options)
    enc = method.backbone.processor(TEXTS, padding=True, return_tensors="pt")
    batch = dict(enc) | {"labels": torch.tensor([0, 0, 1, 1])}
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        _perturb(method.averaged, seed=1)
        _perturb(method.current, seed=2)
        method.tasks_done += 1
        old = method.features(batch)[[0, 2]] + 0.1 * torch.randn(2, 64, generator=g)
        method.head.means[2:] = old
        old = old.double()
        method.head.counts[2:] = 5
    method.double()  # float64: every term, however small, shows above the rounding
    method.begin_task(SimpleNamespace(classes=[0, 1]), lambda: [])
    method.head.classifier.double()
    start = {k: v.detach().clone() for k, v in method.trainable().items()}
    with torch.no_grad():
        for p in method.trainable().values():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return method, batch, old, start


def _ce(method, views, labels):
    return sum(method.head.loss(f, labels) for f in views)


@pytest.mark.parametrize("official", [False, True])
def test_loss_is_the_three_cross_entropies_plus_the_weighted_terms(official):
    """``loss()`` equals ``CE(f_c) + CE(f_p) + CE(f_m) + 0.2 nce + 1e-4 orth + w_reg pull``, each
    term computed here on its own (the documented weights, the intended or the authors' forms),
    in value and in gradient."""
    method, batch, old, start = _second_task(official)
    labels, old_labels = batch["labels"], torch.tensor([2, 3])
    params = list(method.trainable().values()) + list(method.head.classifier.parameters())

    def grads(value):
        return torch.autograd.grad(value, params, allow_unused=True)

    fc, fp, fm = method.views(batch)
    trainable = method.trainable()
    if official:
        nce = losses.official_contrast(fm, labels, old, old_labels, 0.1)
        orth = losses.official_orthogonality([fc, fp], old, 40)
        pull = losses.pull(trainable, start, weights_only=True)
    else:
        nce = losses.contrast(fm, labels, old, old_labels, 0.1)
        orth = losses.orthogonality([fc, fp, fm], losses.prototype_basis(old, 40))
        pull = losses.pull(trainable, start)
    terms = {"nce": 0.2 * nce, "orth": 1e-4 * orth, "pull": method.config.w_reg * pull}
    expected = _ce(method, (fc, fp, fm), labels) + sum(terms.values())
    total = method.loss(batch)
    tol = 1e-9 * abs(float(expected.detach()))
    assert all(abs(float(t.detach())) > 20 * tol for t in terms.values()), terms  # each shows
    assert abs(float(total.detach() - expected.detach())) < tol, (total, expected, terms)
    for got, want in zip(grads(total), grads(expected), strict=True):
        if want is not None:
            assert torch.allclose(got, want, rtol=1e-6, atol=1e-12)


# --- the authors' options ---------------------------------------------------------------------
def test_official_first_task_adds_their_terms_on_the_first_task_only():
    """``official_first_task``: on the first task the authors' contrastive term (the batch alone)
    and orthogonality term (the SVD of an all-zero classifier) join the loss; on later tasks the
    loss is the same as without it."""
    from types import SimpleNamespace

    from retain.errors import RetainError

    def first_task(**options):
        torch.manual_seed(0)  # the same modules both times
        method = _method(official_losses=True, **options).double()
        enc = method.backbone.processor(TEXTS, padding=True, return_tensors="pt")
        batch = dict(enc) | {"labels": torch.tensor([0, 0, 1, 1])}
        method.begin_task(SimpleNamespace(classes=[0, 1]), lambda: [])
        method.head.classifier.double()
        _perturb(method.current, seed=2)
        return method, batch

    plain, batch = first_task()
    theirs, _ = first_task(official_first_task=True)
    labels = batch["labels"]
    fc, fp, fm = plain.views(batch)
    base = _ce(plain, (fc, fp, fm), labels) + plain.config.w_reg * losses.pull(
        plain.trainable(), plain.start, weights_only=True)
    assert abs(float((plain.loss(batch) - base).detach())) < 1e-9
    none = torch.zeros(0, 64, dtype=fm.dtype)
    nce = losses.official_contrast(fm, labels, none, torch.zeros(0, dtype=torch.long), 0.1)
    orth = losses.official_orthogonality([fc, fp], torch.zeros(1, 64, dtype=fm.dtype), 40)
    assert abs(float(nce.detach())) > 1e-3 and abs(float(orth.detach())) > 1e-3
    added = (theirs.loss(batch) - base).detach()
    assert abs(float((added - 0.2 * nce - 1e-4 * orth).detach())) < 1e-9, (added, nce, orth)
    later = []  # with old prototypes the option changes nothing
    for args in ({}, {"official_first_task": True}):
        torch.manual_seed(0)
        method, second, _, _ = _second_task(True, **args)
        later.append(method.loss(second))
    assert torch.equal(*later)
    with pytest.raises(RetainError, match="official_losses=true"):
        NTKCLOptions(official_first_task=True)


def test_inference_halves_scores_each_half_with_its_weight(tiny_config, tmp_path):
    """``inference=halves`` scores ``0.3 cos(averaged halves) + 0.1 cos(current halves)`` against
    each class mean, as the authors' code does; training is the same bit for bit."""
    from retain.errors import RetainError

    _, whole = train_stream(tiny_config(method="ntk-cl", head="prototypes", lr=1e-2),
                            progress=False)
    _, halves = train_stream(tiny_config(method="ntk-cl", head="prototypes", lr=1e-2,
                                         out=str(tmp_path / "halves"),
                                         method_options={"inference": "halves"}), progress=False)
    a, b = whole.stored_tensors(), halves.stored_tensors()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    batch = _text_batch(halves)
    with torch.no_grad():
        f = halves.features(batch)
        means, seen = halves.head.means, halves.head.counts > 0

        def cos(x, y):
            return torch.nn.functional.cosine_similarity(x[:, None], y[None], dim=-1)

        want = 0.3 * cos(f[:, :32], means[:, :32]) + 0.1 * cos(f[:, 32:], means[:, 32:])
        got = halves.predict(batch)
        assert torch.allclose(got[:, seen], want[:, seen], atol=1e-6)
        assert torch.isinf(got[:, ~seen]).all()
        assert not torch.allclose(got[:, seen], whole.predict(batch)[:, seen], atol=1e-3)
        halves.config.half_weights = [1.0, 0.0]  # the averaged half alone
        assert torch.allclose(halves.predict(batch)[:, seen], cos(f[:, :32], means[:, :32])
                              [:, seen], atol=1e-6)
    with pytest.raises(RetainError, match="inference=halves"):
        train_stream(tiny_config(method="ntk-cl", head="analytic", out=str(tmp_path / "bad"),
                                 method_options={"inference": "halves"}), progress=False)
    for bad in ({"inference": "sum"}, {"half_weights": [0.3]}, {"half_weights": [0.0, 0.0]}):
        with pytest.raises(RetainError):
            NTKCLOptions(**bad)


def test_the_first_half_of_each_view_comes_from_the_averaged_modules():
    """After a task, f_c = [averaged adapters' pass | current adapters' pass] and f_p alike:
    with the two copies apart, the first half equals the averaged modules' output and not the
    current ones' (a view built from the current modules twice fails)."""
    method = _method()
    batch = _text_batch(method)
    with torch.no_grad():
        _perturb(method.averaged, seed=1)
        _perturb(method.current, seed=2)
        method.tasks_done += 1
        fc, fp, fm = method.views(batch)
        d = fc.shape[-1] // 2
        for view, family in ((fc, "adapter"), (fp, "prompt")):
            averaged = method.pooled(batch, method.averaged, family)
            current = method.pooled(batch, method.current, family)
            assert (averaged - current).abs().max() > 1e-3  # the copies differ
            assert torch.allclose(view[:, :d], averaged, atol=1e-6)
            assert torch.allclose(view[:, d:], current, atol=1e-6)
        assert torch.equal(fm, method.fusion(fc, fp))


def test_inference_halves_without_prototypes_is_refused_when_planned(tiny_config, monkeypatch):
    """``inference=halves`` reads the prototypes head's class means: any other head is refused
    while the run is planned, before a backbone loads."""
    import retain.backbones
    from retain.errors import RetainError

    def no_load(*args, **kwargs):
        raise AssertionError("the backbone loaded before the check")

    monkeypatch.setattr(retain.backbones, "load_backbone", no_load)
    with pytest.raises(RetainError, match="inference=halves.*'analytic' head"):
        tiny_config(method="ntk-cl", head="analytic",
                    method_options={"inference": "halves"}).plan()
    tiny_config(method="ntk-cl", head="prototypes", method_options={"inference": "halves"}).plan()


def test_inference_halves_without_prototypes_is_refused_when_built_directly():
    """The same refusal for a method built without a planned run (``setup`` checks too)."""
    from retain.errors import RetainError

    head = RunHead("analytic", REGISTRY["analytic"], {"projection": 8}, 3e-4)
    method = NTKCL(NTKCLOptions.from_options({"inference": "halves"}), head)
    with pytest.raises(RetainError, match="inference=halves.*'analytic' head"):
        method.setup(load_backbone("tiny-bert"), _Stream())


def test_compare_refuses_a_planned_problem_before_any_run(tiny_config, tmp_path):
    """``retain compare`` plans every entry before its first run: the halves refusal of the
    second entry (the authors' preset, halves inference, under ``--head analytic``) comes
    before the first entry runs."""
    import retain
    from retain.errors import RetainError

    config = tiny_config(head="analytic", out=str(tmp_path / "c"))
    with pytest.raises(RetainError, match="inference=halves.*'analytic' head"):
        retain.compare(config, ["frozen-ncm", "ntk-cl:authors"], progress=False)
    assert not (tmp_path / "c" / "runs" / "frozen-ncm").exists()
