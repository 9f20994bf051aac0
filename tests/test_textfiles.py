"""The file formats, the text hashing and `adagrad fit` / `adagrad predict` end to end on
small temporary files, every bad input included."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

pytest.importorskip("sklearn")
from adagrad.cli import main  # noqa: E402
from adagrad.textfiles.hashing import TextHasher  # noqa: E402
from adagrad.textfiles.readers import InputError, detect_format, read_chunks  # noqa: E402

M64 = (1 << 64) - 1


def fnv1a(token: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in token:
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def splitmix(h: int) -> int:
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & M64
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & M64
    return h ^ (h >> 31)


def reference_row(text: str, bits: int, ngrams: int) -> dict[int, float]:
    """The hashing module's documented features, in plain Python."""
    tokens, current = [], bytearray()
    for b in text.encode("utf-8"):
        if chr(b).isascii() and (chr(b).isalnum() or b == 95) or b >= 128:
            current.append(b + 32 if 65 <= b <= 90 else b)
        elif current:
            tokens.append(bytes(current))
            current = bytearray()
    if current:
        tokens.append(bytes(current))
    hashes = [fnv1a(t) for t in tokens]
    counts: dict[int, int] = {}
    for start in range(len(hashes)):
        h = hashes[start]
        for n in range(1, ngrams + 1):
            if start + n > len(hashes):
                break
            if n > 1:
                h = splitmix((h * 0x100000001B3 + hashes[start + n - 1]) & M64)
            feature = splitmix(h ^ n) & ((1 << bits) - 1)
            counts[feature] = counts.get(feature, 0) + 1
    values = {f: math.log1p(c) for f, c in counts.items()}
    norm = math.sqrt(sum(v * v for v in values.values())) or 1.0
    return {f: v / norm for f, v in values.items()}


@pytest.mark.parametrize("ngrams", [1, 3])
def test_hashing_matches_the_documented_rule(ngrams):
    docs = ["The cat sat on THE mat, the end.", "", "naïve café — déjà vu 42_x", "a a a b"]
    X = TextHasher(bits=12, ngrams=ngrams).transform(docs)
    assert X.shape == (4, 4096)
    for i, doc in enumerate(docs):
        row = X.getrow(i)
        got = dict(zip(row.indices.tolist(), row.data.tolist()))
        want = reference_row(doc, 12, ngrams)
        assert got.keys() == want.keys()
        for f in want:
            assert got[f] == pytest.approx(want[f], rel=1e-12)


def test_hashing_refuses_bad_settings():
    with pytest.raises(ValueError, match="bits must be an integer from 1 to 31"):
        TextHasher(bits=40)
    with pytest.raises(ValueError, match="ngrams must be"):
        TextHasher(ngrams=0)


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_svmlight_reader_with_comments_and_qid(tmp_path):
    path = write(tmp_path, "a.svm", "# header\n1 qid:3 2:0.5 7:1 # note\n\n-1 3:2\n")
    (chunk,) = read_chunks(path, "auto", bits=3)
    assert chunk.labels == ["1", "-1"] and chunk.lines == [2, 4]
    assert [c.tolist() for c, _ in chunk.rows] == [[2, 7], [3]]
    assert [v.tolist() for _, v in chunk.rows] == [[0.5, 1.0], [2.0]]


def test_tsv_and_csv_readers(tmp_path):
    tsv = write(tmp_path, "a.txt", "pos\tgood film\nneg\tbad, bad film\n")
    assert detect_format(tsv) == "tsv"
    (chunk,) = read_chunks(tsv, "auto", bits=4)
    assert chunk.labels == ["pos", "neg"] and chunk.texts == ["good film", "bad, bad film"]
    csv = write(tmp_path, "b.csv", 'id,review,sentiment\n1,"great, really",pos\n2,awful,neg\n')
    (chunk,) = read_chunks(csv, "auto", bits=4)
    assert chunk.labels == ["pos", "neg"] and chunk.texts == ["great, really", "awful"]
    (chunk,) = read_chunks(csv, "csv", bits=4, label_column="id", text_column="review")
    assert chunk.labels == ["1", "2"]
    chunks = list(read_chunks(tsv, "tsv", bits=4, chunk_lines=1))
    assert [c.labels for c in chunks] == [["pos"], ["neg"]]


@pytest.mark.parametrize("name,text,message", [
    ("a.svm", "1 2:0.5\n1 4:x:y\n", "a.svm:2: malformed feature '4:x:y'"),
    ("b.svm", "1 2:0.5\n0 3:abc\n", "b.svm:2: malformed feature '3:abc'"),
    ("c.tsv", "pos\tok\nno tab here\n", "c.tsv:2: no tab between the label and the text"),
    ("d.csv", "label,text\npos,ok\nneg,too,many\n", "d.csv:3: 3 fields where the header has 2"),
])
def test_readers_name_file_line_and_text(tmp_path, name, text, message):
    path = write(tmp_path, name, text)
    with pytest.raises(InputError, match=message):
        list(read_chunks(path, "auto", bits=4))


TRAIN = "".join(f"{'pos' if i % 2 else 'neg'}\t{'good great fine' if i % 2 else 'bad awful poor'} "
                f"word{i}\n" for i in range(40))


@pytest.mark.parametrize("cache", ["2048", "0"], ids=["rows-in-memory", "streamed-each-pass"])
def test_fit_and_predict_end_to_end_with_json(tmp_path, capsys, cache):
    train = write(tmp_path, "train.tsv", TRAIN)
    test = write(tmp_path, "test.tsv", "pos\tgreat unseenword\nneg\tawful\nmaybe\tgood\n")
    model = str(tmp_path / "m.npz")
    assert main(["fit", train, "--test", test, "-o", model, "--json", "--epochs", "5",
                 "--cache-mb", cache]) == 0
    out, err = capsys.readouterr()
    assert err == ""  # no progress bar when stderr is not a terminal
    report = json.loads(out.strip().splitlines()[-1])
    assert report["accuracy"] == pytest.approx(2 / 3)  # 'maybe' is a class never trained on
    assert set(report["test"]) == {"accuracy", "log_loss", "auc"}
    assert report["train"]["accuracy"] == 1.0
    assert [f for f in os.listdir(tmp_path) if f.startswith(".adagrad")] == []
    out_file = str(tmp_path / "pred.txt")
    assert main(["predict", model, test, "-o", out_file]) == 0
    assert open(out_file).read().split() == ["pos", "neg", "pos"]


def test_fit_regression_on_svmlight_and_csv(tmp_path, capsys):
    rng = np.random.default_rng(0)
    lines = [f"{2 * a - b + 1:.6f} 1:{a:.6f} 2:{b:.6f}" for a, b in rng.normal(size=(200, 2))]
    train = write(tmp_path, "r.svm", "\n".join(lines) + "\n")
    assert main(["fit", train, "-o", str(tmp_path / "r.npz"), "--json", "--epochs", "30",
                 "--lr", "0.3", "--l2", "0"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["loss"] == "squared_error" and report["rmse"] < 0.05 and "mae" in report
    csv = write(tmp_path, "t.csv", "text,label\ngood,pos\nbad,neg\ngood good,pos\nbad bad,neg\n")
    assert main(["fit", csv, "-o", str(tmp_path / "c.npz"), "--loss", "hinge"]) == 0
    assert "train: accuracy 1.0000" in capsys.readouterr().out


@pytest.mark.parametrize("name,text,args,message", [
    ("a.svm", "1 2:1\n0 4:x:y\n", [], "a.svm:2: malformed feature '4:x:y'"),
    ("b.tsv", "1.5\tgood\nhigh\tbad\n", ["--loss", "squared_error"],
     "b.tsv:2: the label is not a number (regression): 'high'"),
    ("c.tsv", "", [], "c.tsv: no examples"),
    ("d.tsv", "pos\ta\npos\tb\n", [], "every example has the label 'pos'"),
    ("e.csv", "text,label\nx,y\n", ["--label-column", "missing"], "no label column named"),
    ("f.tsv", "pos\ta\nneg\tb\n", ["--epochs", "0"], "--epochs must be at least 1"),
])
def test_fit_bad_input_exits_1_and_writes_no_model(tmp_path, capsys, name, text, args, message):
    path = write(tmp_path, name, text)
    model = tmp_path / "m.npz"
    assert main(["fit", path, "-o", str(model), *args]) == 1
    assert message in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == [name]


def test_predict_refuses_corrupted_and_foreign_model_files(tmp_path, capsys):
    data = write(tmp_path, "x.tsv", "pos\tgood\n")
    corrupted = tmp_path / "bad.npz"
    corrupted.write_bytes(b"PK\x03\x04 definitely not a zip")
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, header=np.array(json.dumps({"format": "something-else"})))
    assert main(["predict", str(corrupted), data]) == 1
    assert "not an adagrad model file (or a corrupted one)" in capsys.readouterr().err
    assert main(["predict", str(foreign), data]) == 1
    assert "no 'adagrad-linear-model' header" in capsys.readouterr().err
    train = write(tmp_path, "t.tsv", TRAIN)
    model = tmp_path / "m.npz"
    assert main(["fit", train, "-o", str(model), "--epochs", "1"]) == 0
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(model.read_bytes()[:2000])
    assert main(["predict", str(truncated), data]) == 1
    assert "corrupted" in capsys.readouterr().err


#: the members without an L1 step, written out (the CLI derives its list from adagrad.members)
WITHOUT_L1 = ["adagrad", "rowwise_adagrad", "adagrad_norm", "full_matrix_adagrad", "dog_adagrad"]


@pytest.mark.parametrize("optimizer", WITHOUT_L1)
def test_fit_refuses_l1_on_a_member_without_an_l1_step_in_one_line(tmp_path, capsys, optimizer):
    train = write(tmp_path, "t.tsv", TRAIN)
    assert main(["fit", train, "-o", str(tmp_path / "m.npz"), "--l1", "1e-4",
                 "--optimizer", optimizer]) == 1
    err = capsys.readouterr().err
    assert err == (f"adagrad fit: error: --l1 needs an optimizer with an L1 step "
                   f"(proximal_adagrad, adagrad_da, ftrl); --optimizer {optimizer} has none\n")
    assert sorted(os.listdir(tmp_path)) == ["t.tsv"]


def test_fit_setting_the_optimizer_refuses_is_one_line(tmp_path, capsys):
    """FullMatrixAdagrad refuses 2²⁰ hashed features (its matrix would not fit): one line,
    no traceback, no model."""
    train = write(tmp_path, "t.tsv", TRAIN)
    assert main(["fit", train, "-o", str(tmp_path / "m.npz"),
                 "--optimizer", "full_matrix_adagrad"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("adagrad fit: error: FullMatrixAdagrad: a parameter of shape")
    assert err.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == ["t.tsv"]


def test_fit_offers_every_member_and_dog_adagrad_starts_at_its_own_lr(tmp_path, capsys):
    from adagrad.cli import build_parser
    from adagrad.fit_cli import _resolve_member_options

    parser = build_parser()
    choices = next(a for a in parser._subparsers._group_actions[0].choices["fit"]._actions
                   if a.dest == "optimizer").choices
    assert sorted(choices) == ["adagrad", "adagrad_da", "adagrad_norm", "dog_adagrad", "ftrl",
                               "full_matrix_adagrad", "proximal_adagrad", "rowwise_adagrad"]
    dog = parser.parse_args(["fit", "x.tsv", "--optimizer", "dog_adagrad"])
    plain = parser.parse_args(["fit", "x.tsv", "--optimizer", "adagrad"])
    chosen = parser.parse_args(["fit", "x.tsv", "--optimizer", "dog_adagrad", "--lr", "0.5"])
    for args in (dog, plain, chosen):
        assert _resolve_member_options(args) is None
    assert (dog.lr, plain.lr, chosen.lr) == (1.0, 0.1, 0.5)  # DoGAdagrad's lr: a multiplier
    train = write(tmp_path, "t.tsv", TRAIN)
    assert main(["fit", train, "-o", str(tmp_path / "m.npz"), "--optimizer", "dog_adagrad",
                 "--json", "--epochs", "5"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["train"]["accuracy"] == 1.0
