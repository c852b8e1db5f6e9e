"""Write the coursework's demo submissions (``submissions/coursework/``) from the reference models.

One flat folder, as the coursework collects it, with the mistakes the course
warns about planted, each for the report to name:

  alice-1.h5/.txt, alice-2.h5/.txt  the references, correctly named and scaled
  bob-1.h5/.txt                     outputs in the wrong order (hit first, miss second)
  carol-1.h5/.txt                   the scaling array transposed (6 x 2)
  dave-1.h5/.txt                    the scaling array written with commas
  erin-1.h5                         no scaling file, though the model needs one
  Frank_1.H5, frank-1.txt           a misnamed model file (accepted with a warning)
  model.h5                          a file that belongs to nobody (listed as unrecognised)

    python reference/coursework/make_demo.py [OUT]
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

from solution import task_1, task_2  # noqa: E402

SEED = 1000


def save_scaling(path: Path, scaling, **kw) -> None:
    np.savetxt(path, scaling, **kw)


def main(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model1, _, scaling1 = task_1(SEED)
    model2, _, scaling2 = task_2(SEED)
    model1.save(out / "alice-1.h5")
    save_scaling(out / "alice-1.txt", scaling1)
    model2.save(out / "alice-2.h5")
    save_scaling(out / "alice-2.txt", scaling2)

    kernel, bias = model1.layers[-1].get_weights()  # bob: the two outputs the other way round
    model1.layers[-1].set_weights([kernel[:, ::-1], bias[::-1]])
    model1.save(out / "bob-1.h5")
    model1.layers[-1].set_weights([kernel, bias])
    save_scaling(out / "bob-1.txt", scaling1)

    shutil.copy(out / "alice-1.h5", out / "carol-1.h5")
    save_scaling(out / "carol-1.txt", scaling1.T)
    shutil.copy(out / "alice-1.h5", out / "dave-1.h5")
    save_scaling(out / "dave-1.txt", scaling1, delimiter=",")
    shutil.copy(out / "alice-1.h5", out / "erin-1.h5")
    shutil.copy(out / "alice-1.h5", out / "Frank_1.H5")
    save_scaling(out / "frank-1.txt", scaling1)
    shutil.copy(out / "alice-1.h5", out / "model.h5")
    print(f"demo coursework submissions written to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parent.parent / "submissions" / "coursework")
