"""debian30 (issue 40's second benchmark), built from a small Packages fixture: one item per
distinct summary, its section without the area, ambiguous summaries and role sections dropped,
the largest sections kept, a stream of tasks; a missing index is one line."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from retain import RunConfig
from retain.data import debian
from retain.errors import RetainError

TOPICS = ["python", "perl", "games", "sound", "graphics", "math", "mail", "net", "editors",
          "science", "web", "admin"]


def stanza(name: str, section: str, summary: str) -> str:
    return (f"Package: {name}\nVersion: 1.0\nSection: {section}\nDescription: {summary}\n"
            " A longer text that is not used.\n")


def fixture_text() -> str:
    out = [stanza(f"{t}-{i}", t if i % 2 else f"contrib/{t}", f"the {t} tool number {i}")
           for n, t in enumerate(TOPICS) for i in range(6 + n)]
    out += [stanza("dup-a", "admin", "the admin tool number 1"),  # same summary and section
            stanza("amb-a", "perl", "a shared summary"),
            stanza("amb-b", "games", "a shared summary"),
            stanza("lib-a", "libs", "a library of things"),
            stanza("lib-b", "libdevel", "headers")]
    return "\n".join(out)


@pytest.fixture
def packages(tmp_path, monkeypatch):
    path = tmp_path / "Packages"
    path.write_text(fixture_text())
    monkeypatch.setenv(debian.ENV, str(path))
    debian.debian_source.cache_clear()
    debian.load_debian.cache_clear()
    yield path
    debian.debian_source.cache_clear()
    debian.load_debian.cache_clear()


def test_the_construction(packages):
    pairs = debian.parse_packages(fixture_text())
    assert ("the python tool number 0", "python") in pairs  # contrib/ stripped
    texts, labels, names = debian.select(pairs, classes=10)
    assert "a shared summary" not in texts  # under two sections: dropped
    assert texts.count("the admin tool number 1") == 1  # twice under one section: once
    assert not {"libs", "libdevel"} & set(names)  # roles, not topics
    # the ten largest topics (sizes 6 + n: the last ten of TOPICS), in name order
    assert names == sorted(TOPICS[2:])
    sizes = dict(zip(names, np.bincount(labels), strict=True))
    assert sizes["admin"] == 6 + 11 and sizes["games"] == 6 + 2


def test_a_stream_of_tasks(packages):
    plan = RunConfig(method="frozen-ncm", benchmark="debian30", profile="smoke").plan()
    cfg = plan.config
    assert cfg.class_order_seed == debian.DEFAULT_ORDER_SEED and cfg.classes_per_task == 3
    stream = plan.build_stream()
    assert stream.name == "debian30/smoke" and len(stream.tasks) == 3
    assert all(len(t.classes) == 3 and len(t.train) and len(t.test) for t in stream.tasks)
    texts = {item["text"] for t in stream.tasks for item in t.train.items}
    assert not texts & {item["text"] for t in stream.tasks for item in t.test.items}


def test_a_missing_index_is_one_line(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.write_text("")
    monkeypatch.setenv(debian.ENV, str(empty))
    debian.debian_source.cache_clear()
    with pytest.raises(RetainError, match="the package index is empty: run `apt-get update`"):
        debian.debian_source()
    monkeypatch.setenv(debian.ENV, str(tmp_path / "none"))
    debian.debian_source.cache_clear()
    with pytest.raises(RetainError, match="RETAIN_DEBIAN_PACKAGES"):
        debian.debian_source()
    debian.debian_source.cache_clear()


@pytest.mark.skipif(shutil.which("apt-cache") is None or not subprocess.run(
    ["apt-cache", "pkgnames"], capture_output=True, text=True).stdout.strip(),
    reason="no apt package index on this machine")
def test_the_real_index_gives_thirty_sections(monkeypatch):
    monkeypatch.delenv(debian.ENV, raising=False)
    debian.debian_source.cache_clear()
    debian.load_debian.cache_clear()
    texts, labels, names = debian.load_debian()
    assert len(names) == debian.CLASSES and len(texts) > 10_000
    assert np.bincount(labels).min() >= 300  # every class fills the quick profile's cap
