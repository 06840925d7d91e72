"""Dataset reading and the Beam preprocessing (`camenn preprocess`).

`camenn.preprocessing.preprocess(dataset_dir, output_dir, ...) -> summary dict` is the entry point for the
TFX pipeline's component;
it is imported on first use so that importing this package stays free of Beam and TensorFlow.
"""


def __getattr__(name):
    if name == "preprocess":
        from camenn.preprocessing.pipeline import preprocess

        return preprocess
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
