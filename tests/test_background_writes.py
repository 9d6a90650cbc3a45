"""The run folder's work made cheap (issue 24): image grids written without matplotlib, with the bytes its
imsave wrote; files written by one background thread, in order, their errors reported; a checkpoint written
by that thread holds what the loop's own thread would have written."""
import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from sparseae.run.background import BackgroundWriter
from sparseae.run.pictures import save_reconstructions, to_bytes


@pytest.mark.parametrize("shape, cmap", [((37, 53), "gray"), ((11, 13, 3), None)])
def test_image_levels_are_matplotlibs(shape, cmap):
    from matplotlib.image import imsave

    grid = np.random.default_rng(0).uniform(-0.2, 1.2, size=shape).astype(np.float32)
    grid.flat[:3] = [0.0, 1.0, 0.5]
    buf = io.BytesIO()
    imsave(buf, np.clip(grid, 0, 1), cmap=cmap, vmin=0.0, vmax=1.0, format="png")
    theirs = np.asarray(Image.open(io.BytesIO(buf.getvalue())))[..., :3]
    ours = to_bytes(grid)
    np.testing.assert_array_equal(theirs, ours if ours.ndim == 3 else np.repeat(ours[..., None], 3, axis=2))


def test_reconstructions_png(tmp_path):
    originals = np.linspace(0, 1, 2 * 4 * 5, dtype=np.float32).reshape(2, 20)
    save_reconstructions(originals, 1 - originals, (4, 5), tmp_path / "r.png")
    img = np.asarray(Image.open(tmp_path / "r.png"))
    # 2 rows x 2 columns of 4 x 5 tiles, 1 px apart and around, each pixel drawn 3 x 3
    assert img.shape == (3 * (2 * 5 + 1), 3 * (2 * 6 + 1))
    assert img[3, 3] == 0 and img[3 * 6, 3] == 255  # first pixel of the original (0) and its reconstruction (1)
    assert img[0, 0] == 255  # the white padding


def test_jobs_run_in_order_on_one_thread():
    done, threads = [], set()
    with BackgroundWriter() as writer:
        for i in range(20):
            writer.submit(lambda i=i: (done.append(i), threads.add(threading.get_ident())))
    assert done == list(range(20))
    assert len(threads) == 1 and threading.get_ident() not in threads


def test_a_failed_job_is_reported():
    def fail():
        raise OSError("disk full")

    writer = BackgroundWriter()
    writer.submit(fail)
    with pytest.raises(OSError, match="disk full"):
        writer.wait()
    writer.submit(fail)
    writer._pending[-1].exception()  # until it has failed
    with pytest.raises(OSError, match="disk full"):  # or at the next job, before it runs
        writer.submit(lambda: None)
    with pytest.raises(OSError, match="disk full"):
        with BackgroundWriter() as w:
            w.submit(fail)
    with pytest.raises(KeyError):  # the run's own error wins over a failed write
        with BackgroundWriter() as w:
            w.submit(fail)
            raise KeyError("the run failed")


def test_a_checkpoint_written_later_has_the_same_bytes(tmp_path):
    from sparseae.config import SparsityConfig
    from sparseae.objective import Objective
    from sparseae.run import RunDir
    from sparseae.training.checkpoint import Checkpointer, LoopState

    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(2, 4)).sum().backward()
    optimizer.step()
    state = LoopState(epoch=2, step=0, epoch_rng=torch.Generator().get_state(), history=[{"epoch": 1}])
    objective = Objective(SparsityConfig(penalty="none"))
    files = {}
    for name, writer in (("now", None), ("later", BackgroundWriter())):
        run = RunDir(tmp_path / name)
        run.path.mkdir()
        Checkpointer(run, {"a": 1}, writer=writer).save(model, optimizer, objective, state)
        if writer is not None:
            with torch.no_grad():
                model.weight.add_(1.0)  # training goes on: the file holds the state when it was taken
            state.history.append({"epoch": 2})
            writer.wait()
            with torch.no_grad():
                model.weight.sub_(1.0)
            state.history.pop()
        files[name] = {p.name: p.read_bytes() for p in (run.path / "checkpoint").iterdir()}
    assert files["now"] == files["later"] and len(files["now"]) == 2
