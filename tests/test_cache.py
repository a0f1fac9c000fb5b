"""The cache of token sequences (``retain.cache``): a second run reads what the first made,
without parsing its files; every input that makes the rows is in the key; two processes at once
both get whole arrays; a damaged file is made again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from retain.backbones import smollm2_tokenizer_dir
from retain.data import lm3
from retain.data.lm3 import Domain, token_sequences

TEXT = ["Der Hund bellt den Mond an.", "El perro ladra a la luna.", "Pes štěká na měsíc."] * 20


@pytest.fixture(scope="module")
def tokenizer_dir():
    return smollm2_tokenizer_dir()  # from the real cache, before a test empties it


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture
def cache(tmp_path, monkeypatch, tokenizer):
    """An empty cache, and no rows kept by this process."""
    monkeypatch.setenv("RETAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(lm3, "_SEQUENCES", {})
    return tmp_path / "cache" / "token-sequences"


def _domain(path: Path, reads: list, version: str = "1") -> Domain:
    def docs():
        reads.append(1)
        return path.read_text().splitlines()
    return Domain("test.lines", docs, lambda: [path], version)


def test_a_second_run_reads_the_rows_without_parsing(tmp_path, cache, tokenizer, monkeypatch):
    source = tmp_path / "text.txt"
    source.write_text("\n".join(TEXT))
    reads: list = []
    first = token_sequences(_domain(source, reads), tokenizer, 8)
    assert reads == [1] and len(list(cache.glob("*.npy"))) == 1
    monkeypatch.setattr(lm3, "_SEQUENCES", {})  # a new process: only the disk remembers
    again = token_sequences(_domain(source, reads), tokenizer, 8)
    assert reads == [1]  # a hit: the file was not parsed again
    assert np.array_equal(first, again)
    assert np.array_equal(first, lm3._token_sequences(TEXT, tokenizer, 8))


def test_each_input_changes_the_key(tmp_path, cache, tokenizer, monkeypatch):
    source = tmp_path / "text.txt"
    source.write_text("\n".join(TEXT))
    reads: list = []

    def fresh(docs, tok=tokenizer, length=8):
        monkeypatch.setattr(lm3, "_SEQUENCES", {})
        return token_sequences(docs, tok, length)

    base = fresh(_domain(source, reads))
    fresh(_domain(source, reads))
    assert reads == [1]
    fresh(_domain(source, reads), length=4)  # another sequence length
    assert len(reads) == 2
    fresh(_domain(source, reads, version="2"))  # the reader's code changed
    assert len(reads) == 3
    other = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    other.add_tokens(["Mond"])  # another tokenizer
    fresh(_domain(source, reads), tok=other)
    assert len(reads) == 4
    source.write_text("\n".join(TEXT[::-1]))  # the file's content
    changed = fresh(_domain(source, reads))
    assert len(reads) == 5 and not np.array_equal(changed, base)
    assert np.array_equal(fresh(TEXT), base)  # a list of texts: keyed by the text itself
    assert not np.array_equal(fresh(TEXT[1:]), base)
    assert len(list(cache.glob("*.npy"))) == 7 and not list(cache.glob("*.tmp*"))


def test_a_damaged_file_is_made_again(tmp_path, cache, tokenizer, monkeypatch):
    first = token_sequences(TEXT, tokenizer, 8)
    (path,) = cache.glob("*.npy")
    path.write_bytes(path.read_bytes()[:40])  # cut short
    monkeypatch.setattr(lm3, "_SEQUENCES", {})
    assert np.array_equal(token_sequences(TEXT, tokenizer, 8), first)
    assert np.array_equal(np.load(path), first)


CHILD = """
import json, sys
import numpy as np
from transformers import AutoTokenizer
from retain.data.lm3 import token_sequences
tok = AutoTokenizer.from_pretrained(sys.argv[1])
rows = token_sequences(json.loads(sys.argv[2]), tok, 8)
print(int(rows.sum()), rows.shape[0])
"""


def test_two_processes_at_once_both_get_whole_rows(tmp_path, cache, tokenizer, tokenizer_dir):
    text = TEXT * 50
    env = {**os.environ, "RETAIN_CACHE": str(cache.parent)}
    args = [sys.executable, "-c", CHILD, str(tokenizer_dir), json.dumps(text)]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    rows = lm3._token_sequences(text, tokenizer, 8)
    assert outs == [[str(int(rows.sum())), str(rows.shape[0])]] * 2
    (path,) = cache.glob("*.npy")  # one file, whole, and no temporary left
    assert np.array_equal(np.load(path), rows) and not list(cache.glob("*.tmp*"))
