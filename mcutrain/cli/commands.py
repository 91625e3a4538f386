"""The subcommands in pipeline order, with their one-line help: light enough to import at start-up.

``mcutrain --help`` lists these without importing any command module (they pull in torch and the
engine); each ``cmd_<name>.py`` reads its own line from here, so the text lives in one place.
"""

HELP: dict[str, str] = {
    "zoo": "list the model zoo with parameter and MAC counts",
    "data": "list the offline datasets, inspect a dataset's splits",
    "pretrain": "float-train a zoo network or a JSON architecture (SGD + momentum, cosine schedule)",
    "eval": "accuracy of a checkpoint on a dataset's test split",
    "quantize": "post-training quantization of a float checkpoint to an int8 model",
    "import": "import a foreign int8 model: a full-int8 .tflite, or the paper's tiny-training .pkl",
    "scheme": "list, show and check sparse-update schemes",
    "finetune": "train an int8 model with a sparse-update scheme (PyTorch simulation)",
    "analyze": "measure what each bias depth and weight update adds to accuracy (for the search)",
    "search": "evolutionary search for the best sparse-update scheme under an SRAM (and Flash) budget",
    "compile": "compile a training step: autodiff, prune, reorder, plan memory (and build it as C)",
    "run": "train a compiled C program on a dataset: on the host, or on a Cortex-M7 under QEMU",
    "export": "write an imported int8 graph back as a .tflite (TFLite Micro, LiteRT)",
    "demo": "run the main job on the bundled default backbone",
}
