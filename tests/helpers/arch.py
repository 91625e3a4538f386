"""A small architecture of the user's (JSON), for the tests of custom architectures."""

from __future__ import annotations

import copy
import json


def custom_doc(name: str = "my-tiny") -> dict:
    """Differs from every zoo net: a 5x5 stem, a block without expand after block 0, kernels 3/5/7."""
    return copy.deepcopy({
        "format": "mcutrain-arch", "version": 1, "name": name, "in_ch": 3, "stem_ch": 8, "stem_kernel": 5,
        "stem_stride": 2, "default_resolution": 16,
        "blocks": [
            {"in_ch": 8, "mid_ch": None, "out_ch": 8, "kernel": 3, "stride": 1},
            {"in_ch": 8, "mid_ch": 16, "out_ch": 12, "kernel": 5, "stride": 2},
            {"in_ch": 12, "mid_ch": None, "out_ch": 12, "kernel": 7, "stride": 1},
            {"in_ch": 12, "mid_ch": 24, "out_ch": 16, "kernel": 3, "stride": 2},
        ],
    })


def write_doc(path, doc: dict):
    path.write_text(json.dumps(doc, indent=2))
    return path
