"""`PreprocessDataset`: `camenn preprocess` (Beam) as a pipeline component, so its outputs have lineage.

It runs the same Python entry point as the command line and turns its output folder into artifacts:
a standard `Examples` (splits `train` and `eval`, GZIP tf.Example TFRecords, ready for StatisticsGen,
Transform and the Evaluator), `ItemFeatures` (one tf.Example per good listing) and a
`PreprocessingReport` (summary.json and the quarantine). ExampleGen has no stage for tokenising text and
encoding texts and photo patches, hence this component instead of ExampleGen over files made outside the pipeline.
"""

import hashlib
import json
import os

import tensorflow as tf
from tfx import v1 as tfx
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils

from camenn.tfx_pipeline.components.artifacts import ItemFeatures, PreprocessingReport

SPLITS = ("train", "eval")


def dataset_fingerprint(dataset_dir: str) -> str:
    """A hash of what the dataset folder holds: content of the CSV files, name, size and mtime of the
    rest (photos). A component's cache key includes it, so a changed dataset is preprocessed again."""
    digest = hashlib.sha256()
    for root, dirs, files in tf.io.gfile.walk(dataset_dir):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, dataset_dir).encode())
            if name.endswith(".csv"):
                with tf.io.gfile.GFile(path, "rb") as f:
                    digest.update(hashlib.sha256(f.read()).digest())
            else:
                stat = tf.io.gfile.stat(path)
                digest.update(f"{stat.length}:{stat.mtime_nsec}".encode())
    return digest.hexdigest()


def _move_children(src: str, dst: str) -> None:
    tf.io.gfile.makedirs(dst)
    names = tf.io.gfile.listdir(src) if tf.io.gfile.exists(src) else []
    for name in names:
        tf.io.gfile.rename(os.path.join(src, name), os.path.join(dst, name.rstrip("/")), overwrite=True)
    if not names:
        # Every row was quarantined: an empty file keeps the split readable, and ExampleValidator then
        # reports the empty split as an anomaly (the schema asks for examples) instead of a crash.
        with tf.io.TFRecordWriter(os.path.join(dst, "empty.tfrecord.gz"), options="GZIP"):
            pass
    if tf.io.gfile.exists(src):
        tf.io.gfile.rmtree(src)


@tfx.dsl.components.component
def PreprocessDataset(
    examples: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Examples],
    items: tfx.dsl.components.OutputArtifact[ItemFeatures],
    report: tfx.dsl.components.OutputArtifact[PreprocessingReport],
    dataset_dir: tfx.dsl.components.Parameter[str],
    dataset_fingerprint: tfx.dsl.components.Parameter[str],
    code_version: tfx.dsl.components.Parameter[str],
    image_encoder: tfx.dsl.components.Parameter[str],
    image_preset: tfx.dsl.components.Parameter[str],
    grid: tfx.dsl.components.Parameter[str],
    max_text_length: tfx.dsl.components.Parameter[int],
    text_encoder: tfx.dsl.components.Parameter[str],
    num_text_tokens: tfx.dsl.components.Parameter[int],
    beam_args: tfx.dsl.components.Parameter[str],
    embedding_cache_dir: tfx.dsl.components.Parameter[str] = "",
) -> None:
    """Tokenises and joins a dataset folder into tf.Examples (see module docstring).

    `dataset_fingerprint` and `code_version` are not read here: they are part of the cache key, so a run
    over a changed dataset or changed code does not reuse an old output.
    """
    from camenn.preprocessing import preprocess

    del dataset_fingerprint, code_version
    staging = report.uri
    summary = preprocess(
        dataset_dir=dataset_dir,
        output_dir=staging,
        image_encoder=image_encoder,
        image_preset=image_preset,
        grid=grid,
        max_text_length=max_text_length,
        beam_args=json.loads(beam_args),
        cache_dir=embedding_cache_dir or None,
        text_encoder=text_encoder,
        num_text_tokens=num_text_tokens,
    )
    examples.split_names = artifact_utils.encode_split_names(list(SPLITS))
    for split in SPLITS:
        _move_children(os.path.join(staging, "examples", split), artifact_utils.get_split_uri([examples], split))
    if tf.io.gfile.exists(os.path.join(staging, "examples")):
        tf.io.gfile.rmtree(os.path.join(staging, "examples"))
    _move_children(os.path.join(staging, "items"), items.uri)
    examples_utils.set_payload_format(examples, example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE)
    examples_utils.set_file_format(examples, "tfrecords_gzip")
    report.set_json_value_custom_property("summary", summary)
