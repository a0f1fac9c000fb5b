"""Streams: wordnet45 exactly as benchmarks.md defines it, and the user's own files."""

import json

import numpy as np
import pytest

from retain import RunConfig
from retain.data.wordnet import load_wordnet, parse_gloss, wordnet45
from retain.errors import RetainError
from retain.profiles import CLASSIFICATION_PROFILES as PROFILES
from tests.conftest import make_rows


def test_wordnet_items_and_classes():
    texts, labels, names = load_wordnet()
    assert len(texts) == 117_659
    assert len(names) == 45 and names[0] == "adj.all" and names[44] == "adj.ppl"
    counts = np.bincount(labels, minlength=45)
    assert counts.min() == 42 and counts.max() == 14_435
    assert counts[names.index("noun.motive")] == 42


def test_gloss_drops_example_sentences():
    line = ('00001740 00 a 01 able 0 005 = 05207437 n 0000 | (usually followed by `to\') having '
            'the necessary means; "she was able to program her computer"')
    assert parse_gloss(line) == (0, "(usually followed by `to') having the necessary means")


def test_wordnet45_quick_matches_the_spec():
    stream = wordnet45(PROFILES["quick"])
    assert len(stream) == 9
    assert stream.class_order == [int(c) for c in np.random.RandomState(1993).permutation(45)]
    assert stream.tasks[0].name == ("noun.possession+verb.contact+noun.food+noun.object+"
                                    "noun.shape")
    sizes = [(len(t.train), len(t.test)) for t in stream.tasks]
    assert sizes[0] == (1200, 300)
    assert sum(a + b for a, b in sizes) == 40 * 300 + 42 + 51 + 60 + 81 + 243
    # the five small classes (spec: 42, 51, 60, 81, 243 items) split round(0.8 n) / rest
    names = stream.class_names
    for name, (n_train, n_test) in {"noun.motive": (34, 8), "noun.Tops": (41, 10),
                                    "adj.ppl": (48, 12), "verb.weather": (65, 16),
                                    "verb.consumption": (194, 49)}.items():
        c = names.index(name)
        task = stream.tasks[c // 5]
        assert (task.train.labels == c).sum() == n_train and (task.test.labels == c).sum() == n_test
    # labels are positions in the class order: task t holds 5t..5t+4
    for t, task in enumerate(stream.tasks):
        assert set(task.train.labels) == set(range(5 * t, 5 * t + 5)) == set(task.test.labels)


def test_wordnet45_smoke_and_other_orders():
    stream = wordnet45(PROFILES["smoke"])
    # 40 items a class, 3 a task: 32 / 8 a class
    assert [(len(t.train), len(t.test)) for t in stream.tasks] == [(96, 24)] * 3
    assert stream.class_order == wordnet45(PROFILES["quick"]).class_order  # the whole order
    assert stream.num_classes == 9
    other = wordnet45(PROFILES["smoke"], order_seed=7)
    assert other.class_order != stream.class_order
    explicit = wordnet45(PROFILES["smoke"], order=list(range(45)))
    assert explicit.class_order == list(range(45))
    assert explicit.class_names[:2] == ["adj.all", "adj.pert"]
    with pytest.raises(RetainError, match="permutation"):
        wordnet45(PROFILES["smoke"], order=[0, 1])


def _stream(path, **kw):
    return RunConfig(data=str(path), **kw).plan().build_stream()


def test_jsonl_split_per_class_and_seeded_order(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in make_rows(10)))
    stream = _stream(path, classes_per_task=2, seed=3)
    assert len(stream) == 3
    assert all((len(t.train), len(t.test)) == (16, 4) for t in stream.tasks)
    assert sorted(stream.class_names) == sorted(
        ["animal", "colour", "food", "music", "sport", "weather"])
    assert stream.class_order == [int(c) for c in np.random.RandomState(3).permutation(6)]
    assert _stream(path, classes_per_task=2, class_order=[5, 4, 3, 2, 1, 0]).class_names[0] == \
        "weather"


def test_csv_with_split_column_and_integer_labels(tmp_path):
    path = tmp_path / "d.csv"
    lines = ["text,label,split"]
    for i in range(24):
        lines.append(f"item number {i},{i % 4},{'test' if i >= 20 else 'train'}")
    path.write_text("\n".join(lines))
    stream = _stream(path, classes_per_task=2, class_order=[0, 1, 2, 3])
    assert stream.class_names == ["0", "1", "2", "3"]
    assert [len(t.test) for t in stream.tasks] == [2, 2]
    assert [len(t.train) for t in stream.tasks] == [10, 10]


def test_domain_incremental_needs_a_domain_column(tmp_path):
    rows = [dict(r, domain=f"d{i % 2}") for i, r in enumerate(make_rows(10, ["food", "sport"]))]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    stream = _stream(path, scenario="domain")
    assert [t.name for t in stream.tasks] == ["d0", "d1"]
    assert all(t.classes == [0, 1] for t in stream.tasks)
    plain = tmp_path / "p.jsonl"
    plain.write_text("\n".join(json.dumps(r) for r in make_rows(10)))
    with pytest.raises(RetainError, match="domain"):
        _stream(plain, scenario="domain")


@pytest.mark.parametrize("content, message", [
    ('{"text": "a"}\n', "no 'label' column"),
    ('{"text": "a", "label": ""}\n', "does not parse"),
    ('{"text": "a", "label": [1]}\n', "does not parse"),
    ('not json\n', "not a JSON object"),
    ('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n', "has no test items"),
])
def test_bad_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(RetainError, match=message):
        _stream(path)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(RetainError, match="does not exist"):
        _stream(tmp_path / "nope.csv")
    (tmp_path / "x.parquet").write_text("")
    with pytest.raises(RetainError, match="unknown format"):
        _stream(tmp_path / "x.parquet")
