"""Training on your own array files: formats, streaming in shuffled chunks, one-pass statistics, bad input."""
import hashlib
import zipfile

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from sparseae.cli import main
from sparseae.data.arrays import ArrayData, StreamBatches, open_array, scan
from sparseae.objective.metrics import evaluate
from sparseae.model import SparseAutoencoder
from sparseae.config import ModelConfig
from sparseae.run import load_run

TRAIN = ["--hidden", "8", "--activation", "sigmoid", "--output-activation", "linear", "--epochs", "2",
         "--batch-size", "32", "--quiet"]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(500, 6)) * [1, 2, 3, 4, 5, 6] + [0, 1, 2, 3, 4, 5]).astype(np.float32)


def _folder_digest(path):
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def test_every_format_reads_the_same_rows(tmp_path, data):
    pytest.importorskip("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    np.save(tmp_path / "a.npy", data)
    np.save(tmp_path / "f.npy", np.asfortranarray(data.astype(np.float64)))
    np.savez(tmp_path / "stored.npz", x=data)
    np.savez_compressed(tmp_path / "packed.npz", x=data)
    save_file({"x": data}, str(tmp_path / "a.safetensors"))
    pq.write_table(pa.table({f"c{j}": data[:, j] for j in range(6)}), tmp_path / "a.parquet", row_group_size=70)
    np.savetxt(tmp_path / "a.csv", data, delimiter=",", header=",".join(f"c{j}" for j in range(6)),
               comments="", fmt="%.9g")
    for name in ("a.npy", "f.npy", "stored.npz", "packed.npz", "a.safetensors", "a.parquet", "a.csv"):
        arr = open_array(tmp_path / name)
        assert (arr.n_rows, arr.n_cols) == data.shape, name
        got = np.concatenate([arr.read(a, b) for a, b in arr.blocks(0, arr.n_rows)])
        np.testing.assert_array_equal(got, data, err_msg=name)
        np.testing.assert_array_equal(arr.read(123, 321), data[123:321], err_msg=name)
    with zipfile.ZipFile(tmp_path / "stored.npz") as z:
        assert z.getinfo("x.npy").compress_type == zipfile.ZIP_STORED  # read in place, not into memory
    assert type(open_array(tmp_path / "stored.npz")).__name__ == "RawArrayFile"


def test_bfloat16_safetensors(tmp_path, data):
    t = torch.from_numpy(data).bfloat16()
    from safetensors.torch import save_file as save_torch
    save_torch({"x": t}, str(tmp_path / "b.safetensors"))
    np.testing.assert_array_equal(open_array(tmp_path / "b.safetensors").read(0, 500), t.float().numpy())


def test_one_pass_statistics_match_numpy(tmp_path, data):
    np.save(tmp_path / "a.npy", data)
    arr = open_array(tmp_path / "a.npy")
    st = scan(arr, 0, 450, covariance=True, chunk_bytes=24 * 37)  # 37 rows per chunk: many merges
    x = data[:450].astype(np.float64)
    np.testing.assert_allclose(st.mean, x.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(st.std, x.std(0), rtol=1e-12)
    np.testing.assert_allclose(st.covariance, np.cov(x.T, bias=True), rtol=1e-10, atol=1e-12)


def test_stream_covers_each_row_once_and_resumes_mid_epoch(tmp_path, data):
    x = np.arange(1000 * 3, dtype=np.float32).reshape(1000, 3)
    np.save(tmp_path / "a.npy", x)
    arr = open_array(tmp_path / "a.npy")
    src = StreamBatches(arr, 900, 64, torch.device("cpu"))
    src.block_list = [(i, i + 50) for i in range(0, 900, 50)]  # small blocks and chunks: many boundaries
    src.blocks_per_chunk = 3
    g = torch.Generator().manual_seed(1)
    state = g.get_state()
    batches = list(src.epoch(g))
    assert len(batches) == src.steps() == 15 and [len(b) for b in batches] == [64] * 14 + [4]
    rows = torch.cat(batches)[:, 0] / 3
    assert sorted(rows.long().tolist()) == list(range(900))  # every training row once, no validation row
    assert rows[:64].long().tolist() != list(range(64))  # shuffled
    g.set_state(state)
    np.testing.assert_array_equal(torch.cat(list(src.epoch(g, start_step=9))), torch.cat(batches[9:]))


def test_evaluate_on_chunks_equals_evaluate_on_tensor(data):
    torch.manual_seed(0)
    model = SparseAutoencoder(ModelConfig(input_dim=6, hidden=[5], output_activation="linear",
                                          input_transform="standardize"))
    x = torch.from_numpy(data)
    model.input_transform.fit(x)
    whole = evaluate(model, x)
    chunked = evaluate(model, [x[i:i + 77] for i in range(0, 500, 77)])
    for k in whole:
        assert chunked[k] == pytest.approx(whole[k], rel=1e-6, abs=1e-9), k  # float32 chunk sums


@pytest.mark.parametrize("stream", ["yes", "no"])
def test_train_on_npy_stores_standardisation(tmp_path, data, stream):
    np.save(tmp_path / "a.npy", data)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "array", "--data", str(tmp_path / "a.npy"), "--stream", stream,
                 "--input-transform", "standardize", "--val-fraction", "0.2", *TRAIN, "--out", str(out)]) == 0
    model = load_run(out)
    x = data[:400].astype(np.float64)  # the first 80% are the training rows
    np.testing.assert_allclose(model.input_transform.mean.numpy(), x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(model.input_transform.scale.numpy(), x.std(0), rtol=1e-5)
    assert (out / "metrics.csv").read_text().count("\n") == 3  # header + 2 epochs
    assert main(["eval", str(out)]) == 0


def test_streamed_and_in_memory_training_agree_on_statistics_and_rows(tmp_path, data):
    np.save(tmp_path / "a.npy", data)
    a = ArrayData(tmp_path / "a.npy", val_fraction=0.1)
    streamed = a.prepare("yes")
    assert streamed is a and a.stats.count == 450
    mem = ArrayData(tmp_path / "a.npy", val_fraction=0.1).prepare("no")
    assert mem.train.shape == (450, 6) and mem.test.shape == (50, 6)
    np.testing.assert_array_equal(mem.test.numpy(), data[450:])


def _bad_run(tmp_path, capsys, path, *extra):
    out = tmp_path / "run"
    out.mkdir(exist_ok=True)
    (out / "config.json").write_text('{"sentinel": true}\n')
    before = _folder_digest(out)
    code = main(["train", "--dataset", "array", "--data", str(path), *TRAIN, "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert _folder_digest(out) == before  # nothing overwritten
    return err


@pytest.mark.parametrize("stream", ["yes", "no"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values_are_refused(tmp_path, capsys, data, bad, stream):
    x = data.copy()
    x[470, 2] = bad  # in the validation rows
    np.save(tmp_path / "bad.npy", x)
    err = _bad_run(tmp_path, capsys, tmp_path / "bad.npy", "--stream", stream)
    assert "row 470, column 2" in err and "finite" in err


def test_one_dimensional_array_is_refused(tmp_path, capsys):
    np.save(tmp_path / "v.npy", np.arange(10.0))
    assert "2-D" in _bad_run(tmp_path, capsys, tmp_path / "v.npy")


def test_non_numeric_csv_cell_is_refused(tmp_path, capsys):
    lines = ["a,b,c"] + [f"{i},{i + 1},{i + 2}" for i in range(40)]
    lines[17] = "16,seventeen,18"
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    err = _bad_run(tmp_path, capsys, tmp_path / "t.csv")
    assert "non-numeric" in err and "seventeen" in err and "row 17" in err


def test_missing_file_and_unknown_format_are_refused(tmp_path, capsys):
    assert "does not exist" in _bad_run(tmp_path, capsys, tmp_path / "nope.npy")
    (tmp_path / "x.txt").write_text("1,2\n")
    assert "unknown format" in _bad_run(tmp_path, capsys, tmp_path / "x.txt")
