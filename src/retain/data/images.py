"""An image folder as a class-incremental stream, the layout ImageNet-R and most image sets
ship in: ``DIR/<class>/*.png|jpg``, or ``DIR/train/<class>/...`` and ``DIR/test/<class>/...``.

Classes are the sorted sub-folder names (class order indices refer to that list). Without
``train`` / ``test`` folders each class is split 80/20 as a CSV is (``split_per_class`` on the
files in name order), after the profile's cap (first ``cap`` files of each class); with them, the
cap keeps the first ``round(0.8 cap)`` training and the rest of ``cap`` test files per class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from retain.data.stream import Stream, class_incremental, class_order_for, split_per_class
from retain.errors import RetainError
from retain.profiles import Profile

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def _classes(root: Path) -> dict[str, list[Path]]:
    return {d.name: sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            for d in sorted(root.iterdir()) if d.is_dir()}


def image_stream(config, profile: Profile) -> Stream:
    root = Path(config.data).expanduser()
    parts = {p: root / p for p in ("train", "test") if (root / p).is_dir()}
    if len(parts) == 1:
        raise RetainError(f"image folder '{config.data}' has a '{next(iter(parts))}' folder but "
                          "not the other: give both train/ and test/, or neither")
    if parts:
        train, test = _classes(parts["train"]), _classes(parts["test"])
        if sorted(train) != sorted(test):
            raise RetainError(f"image folder '{config.data}': train/ and test/ have different "
                              f"classes ({sorted(set(train) ^ set(test))[:5]})")
        n_train = None if profile.cap is None else int(round(0.8 * profile.cap))
        n_test = None if profile.cap is None else profile.cap - n_train
        per_class = {c: (train[c][:n_train], test[c][:n_test]) for c in sorted(train)}
    else:
        per_class = {c: (files[: profile.cap], []) for c, files in _classes(root).items()}
    per_class = {c: v for c, v in per_class.items() if v[0] or v[1]}
    if len(per_class) < 2:
        raise RetainError(f"image folder '{config.data}' has {len(per_class)} class folder(s) "
                          "with images: it needs at least 2 (DIR/<class>/*.png|jpg)")
    names = list(per_class)
    files, labels, is_train = [], [], []
    for c, (tr, te) in enumerate(per_class.values()):
        for group, flag in ((tr, True), (te, False)):
            files += group
            labels += [c] * len(group)
            is_train += [flag] * len(group)
    labels_arr = np.asarray(labels)
    if not parts:  # 80/20 per class
        train_idx, _ = split_per_class(labels_arr, None)
        is_train = list(np.isin(np.arange(len(files)), train_idx))
    order = class_order_for(len(names), config.class_order_seed, config.class_order)
    return class_incremental(root.name, [{"image": str(f)} for f in files], labels_arr, names,
                             order, profile.classes_per_task, np.asarray(is_train),
                             groups=profile.tasks, scenario=config.scenario)
