"""Write Fashion-MNIST (Debian's ``dataset-fashion-mnist``) as an image folder:
``OUT/{train,test}/<class>/NNNNN.png``, the first N images of each class of each split.

    python scripts/fashion_mnist_folder.py OUT --per-class 20

The IDX files are ``/usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}
-ubyte.gz`` (``apt-get install dataset-fashion-mnist``).
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np

SOURCE = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
           "ankle-boot"]


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def write_folder(out: Path, per_class: int, source: Path = SOURCE) -> Path:
    from PIL import Image

    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(source / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(source / f"{prefix}-labels-idx1-ubyte.gz")
        n = per_class if split == "train" else max(1, per_class // 4)
        for c, name in enumerate(CLASSES):
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in np.flatnonzero(labels == c)[:n]:
                Image.fromarray(images[i]).save(folder / f"{i:05d}.png")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--per-class", type=int, default=20, help="training images per class (test: "
                   "a quarter of it)")
    p.add_argument("--source", type=Path, default=SOURCE)
    args = p.parse_args()
    print(write_folder(args.out, args.per_class, args.source))


if __name__ == "__main__":
    main()
