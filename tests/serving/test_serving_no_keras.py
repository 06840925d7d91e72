"""The pushed SavedModel, and `camenn serve` over it, need only TensorFlow: no keras, keras_hub or
tensorflow_text (what stock TensorFlow Serving, which has no Python at all, can load)."""

import signal
import subprocess
import sys

import numpy as np
import tensorflow as tf
from serving_helpers import WITHOUT_KERAS, Stubs, dense_inputs, item_example, predict_request, start_server_process

from camenn.model import features as F

LOAD_AND_CALL = """
import sys
import numpy as np
import tensorflow as tf

model = tf.saved_model.load(sys.argv[1])
arrays = np.load(sys.argv[2], allow_pickle=True)
dense = model.signatures["dense"](**{name: arrays[name] for name in arrays.files if name != "examples"})
examples = model.signatures["serving_default"](examples=arrays["examples"])
for task in ("cvr", "ita", "tia"):
    assert dense[task].shape == (len(arrays["examples"]),), dense[task].shape
    np.testing.assert_allclose(dense[task].numpy(), examples[task].numpy(), rtol=1e-5)
# The listing table's signatures: rank by item id gives the whole model's scores; listings and
# encode_listings (what `camenn listings add` runs) work without Keras too.
def inputs_of(signature):
    names = model.signatures[signature].structured_input_signature[1]
    return {name: arrays[name] for name in names}
ranked = model.signatures["rank"](**inputs_of("rank"))
for task in ("cvr", "ita", "tia"):
    np.testing.assert_allclose(ranked[task].numpy(), dense[task].numpy(), rtol=1e-5, atol=1e-6)
titles = model.signatures["listings"](item_id=arrays["item_id"])["title"].numpy()
assert all(titles), titles
encoded = model.signatures["encode_listings"](**inputs_of("encode_listings"))
assert all(value.shape[0] == len(arrays["item_id"]) for value in encoded.values()), encoded.keys()
blocked = sorted(m for m in sys.modules if m.partition(".")[0] in ("keras", "keras_hub", "tf_keras", "tensorflow_text"))
assert not blocked, blocked
print("LOADED WITHOUT KERAS", {task: dense[task].numpy().round(3).tolist() for task in ("cvr", "ita", "tia")})
"""


def test_saved_model_and_every_signature_run_without_keras(tmp_path, model_v1, catalog):
    items, _ = catalog
    arrays = dense_inputs(items, n=3)
    rows = [
        dict(shopper_id="shopper_1", hour=int(h), distance_km=float(d))
        for h, d in zip(arrays[F.HOUR], arrays[F.DISTANCE_KM])
    ]
    arrays["examples"] = np.array([item_example(items[i], **rows[i]) for i in range(3)], dtype=object)
    np.savez(tmp_path / "inputs.npz", **arrays)
    result = subprocess.run(
        [sys.executable, str(WITHOUT_KERAS), "-c", LOAD_AND_CALL, str(model_v1), str(tmp_path / "inputs.npz")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "LOADED WITHOUT KERAS" in result.stdout


def test_server_process_serves_without_keras_and_stops_on_sigterm(model_base, catalog):
    process, port, lines = start_server_process(["--model_base_path", str(model_base), "--grace_period_seconds", "5"])
    try:
        stubs = Stubs(port)
        response = stubs.predict.Predict(predict_request(dense_inputs(catalog[0], n=5)), timeout=30)
        assert tf.make_ndarray(response.outputs[F.CVR]).shape == (5,)
        assert stubs.status()[1].state == 30  # AVAILABLE
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=60)
        stubs.channel.close()
    finally:
        if process.poll() is None:
            process.kill()
    log = "".join(lines) + out
    assert process.returncode == 0, log
    assert "stopped" in log
