"""The limits a dataset must keep, checked before anything is allocated from what a file claims.

A user's ``npz:`` or ``folder:`` dataset says how big it is (npy headers, zip members' declared sizes,
image headers) before its pixels are read; every claim is checked against these limits first, so a
hostile or broken file is refused with a one-line ``DataError`` instead of exhausting memory.

Why these numbers: mcutrain trains networks for microcontrollers, whose inputs are at most a few
hundred pixels a side (the architecture limit is 1024, ``mcutrain.models.spec_file``), on datasets
that fit in the memory of the training machine as one uint8 array.

* ``MAX_CLASSES`` 10,000: ten times ImageNet's 1,000; class names and per-class counts are built
  from it, so it bounds those allocations.
* ``MAX_SAMPLES`` 10,000,000: about eight ImageNet training sets; labels become int64 [N] (80 MB).
* ``MAX_IMAGE_SIDE`` 4,096 pixels: four times the largest network input; images are resized to the
  network's side anyway. The smallest side is 1 (a 0-pixel image has nothing to resize).
* ``MAX_DATASET_BYTES`` 2 GiB: the decompressed bytes of all arrays of an ``.npz`` together, and the
  decoded pixels of a ``folder:`` dataset. Splitting and the loader hold a few copies of the images,
  so 2 GiB of data needs several GiB of memory; Fashion-MNIST is 55 MB. Larger sets: subsample or
  store them at the network's resolution.
"""

from __future__ import annotations

MAX_CLASSES = 10_000
MAX_SAMPLES = 10_000_000
MAX_IMAGE_SIDE = 4096
MAX_DATASET_BYTES = 2 * 1024 ** 3


def gib(nbytes: int) -> str:
    """Bytes for people: '8.40 GiB' (messages state sizes and limits alike)."""
    return f"{nbytes / 1024 ** 3:.2f} GiB"
